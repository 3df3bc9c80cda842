"""`latentspace tune --storage postgresql://...` against a real, throwaway PostgreSQL server.

The server runs on 127.0.0.1 with its data directory in /tmp and is stopped afterwards. When
PostgreSQL cannot be started (binaries missing: `scripts/system-deps.sh` installs Debian's
`postgresql` when root) the test is skipped and the reason printed, never silently passed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from latentspace.config import Config, apply_overrides  # noqa: E402
from latentspace.tune import config_to_toml  # noqa: E402
from latentspace.tune.study import database_url  # noqa: E402
from test_tune import stop_during_a_trial  # noqa: E402

SPACE = """
[train]
epochs = 8
lr = { low = 1e-3, high = 3e-2, log = true }
optimizer = "adam"
[model]
hidden_sizes = { layers = [1, 2], units = [8, 32], log = true }
latent_dim = { low = 2, high = 4 }
"""


def _skip(reason: str) -> None:
    sys.__stderr__.write(f"\nPostgreSQL test skipped: {reason}\n")  # shown even under capture
    pytest.skip(reason)


def _binary(name: str) -> str | None:
    """From PATH, else Debian's versioned directory (the newest version)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _skip("initdb/pg_ctl not found (apt-get install postgresql)")
    try:
        import psycopg2
    except ImportError:
        _skip("psycopg2 is not installed (pip install 'latentspace[tune]')")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres account
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _skip("running as root and there is no 'postgres' user to run the server")
        runuser = shutil.which("runuser")
        if runuser is None:
            _skip("running as root without runuser to drop to the postgres user")
        prefix = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="latentspace-pg-"))
    data, port = root / "data", _free_port()
    if prefix:
        os.chown(root, account.pw_uid, account.pw_gid)
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "latentspace", "--no-sync"],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "-t", "60", "start"],
            check=True, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", "") or ""
        shutil.rmtree(root, ignore_errors=True)
        _skip(f"could not start PostgreSQL: {error} {detail.strip()[-300:]}")
    try:
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="latentspace", dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE tune")
        connection.close()
        yield f"postgresql://latentspace@127.0.0.1:{port}/tune"  # as a user writes it
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _command(tmp_path: Path, config: Config, url: str, trials: int, *extra: str) -> list[str]:
    import numpy as np

    from conftest import make_images

    data = tmp_path / "more.npz"
    if not data.exists():
        # enough images that a trial lasts long enough for the test to kill it mid-way
        np.savez(data, images=make_images(2048), labels=np.zeros(2048, dtype=np.int64))
    base = tmp_path / "base.toml"
    base.write_text(config_to_toml(apply_overrides(config, [f"data.dataset={data}"])))
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    return [
        sys.executable, "-m", "latentspace.cli", "tune", "--config", str(base), "--space",
        str(space), "--out", str(tmp_path / "out"), "--study", "pg", "--trials", str(trials),
        "--storage", url, "--sampler", "random", "--pruner", "none", "--heartbeat", "1", *extra,
    ]  # fmt: skip


def test_two_workers_on_postgresql_and_a_killed_trial_is_retried(
    postgres_url: str, tmp_path: Path, tiny_config: Config
) -> None:
    # one worker, killed with -9 in the middle of its second trial
    command = _command(tmp_path, tiny_config, postgres_url, 6)
    url = database_url(postgres_url)
    number, _ = stop_during_a_trial(
        command, lambda: optuna.load_study(study_name="pg", storage=url), signal.SIGKILL
    )
    study = optuna.load_study(study_name="pg", storage=url)
    killed = [t for t in study.trials if t.state.name == "RUNNING"]
    assert [t.number for t in killed] == [number]
    earlier = {t.user_attrs.get("pid") for t in study.trials}  # the killed process(es)
    time.sleep(3.5)  # the heartbeat's grace period (3 x 1 s) passes

    # two workers finish the study: the stale trial is failed and retried with its parameters
    result = subprocess.run(
        [*command, "--workers", "2"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="pg", storage=database_url(postgres_url)).trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # each recorded once
    stale = next(t for t in trials if t.number == killed[0].number)
    assert stale.state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("retry_history")]
    assert len(retries) == 1 and retries[0].system_attrs["retry_history"] == [stale.number]
    assert retries[0].params == stale.params and retries[0].state.name == "COMPLETE"
    counted = [t for t in trials if t.number != stale.number]
    assert len(counted) == 6 and all(t.state.name == "COMPLETE" for t in counted)
    assert len({t.user_attrs["pid"] for t in counted} - earlier) == 2  # both workers took trials
    assert len({t.user_attrs["run_dir"] for t in counted}) == 6
    assert (tmp_path / "out" / "best.toml").exists()
