"""A run directory under attack (issue 24): two writers, kill -9 at every file operation of a
checkpoint, Ctrl-C, truncated and damaged records, an --out that is not a run's, read-only
folders, a full disk, damaged config, weights and trainer state."""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from conftest import make_images
from latentspace import runs
from latentspace.cli import main
from latentspace.diagnostics import read_diagnostics
from latentspace.errors import RunError

train_module = importlib.import_module("latentspace.train")  # the package's `train` is the function
TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "16", "--threads", "1"]
TINY += ["--device", "cpu", "--quiet", "--no-report"]


def _train(data: Path, out: Path, epochs: int = 2, *extra: str) -> list[str]:
    """`latentspace train` of a tiny VAE (hidden 16, latent 2) on `data` into `out`."""
    return [
        "train",
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        *TINY,
        *extra,
    ]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting a one-line error; returns that line."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("latentspace: error: ") and err.count("\n") == 1, err
    return err


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / runs.WEIGHTS))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=make_images(64), labels=np.arange(64) % 4)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A finished 2-epoch tiny run (copy it before changing it: see `run`)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(_train(data, out)) == 0
    return out


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# ---- 1. one writer at a time --------------------------------------------------------------------
def test_two_trainers_on_one_out_one_refused_naming_the_holder(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "latentspace.cli"]
    first = subprocess.Popen(
        [*command, *_train(data, out, 15, "--hidden", "24")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    second = subprocess.Popen(
        [*command, *_train(data, out, 15, "--hidden", "8")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = {p.pid: (p, p.communicate(timeout=120)) for p in (first, second)}
    codes = sorted(p.returncode for p, _ in results.values())
    assert codes == [0, 1], {pid: r[1] for pid, r in results.items()}
    (winner,) = [p for p, _ in results.values() if p.returncode == 0]
    (loser_err,) = [err for p, (_, err) in results.values() if p.returncode == 1]
    assert loser_err.count("\n") == 1 and f"PID {winner.pid} (train)" in loser_err, loser_err
    opened = runs.open_run(out)  # the weights match config.json ...
    assert opened.config.model.hidden_sizes == (
        (24,) if winner is first else (8,)
    )  # ... the winner's
    assert [r["epoch"] for r in opened.metrics] == list(range(1, 16))


def test_evaluate_and_resume_name_the_holder_of_the_lock(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runs, "_APPEND_WAIT_S", 0.2)
    before = (run / runs.METRICS).read_text()
    with runs.lock_run(run, "train"):
        err = _error(capsys, ["evaluate", str(run), "--split", "val", "--nll-samples", "0"])
        assert f"PID {os.getpid()} (train)" in err
        err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
        assert f"PID {os.getpid()} (train)" in err
    assert (run / runs.METRICS).read_text() == before
    assert (
        main(["evaluate", str(run), "--split", "val", "--nll-samples", "0"]) == 0
    )  # released: it appends


# ---- 2. kill -9 at every file operation of the checkpoints --------------------------------------
RUNNER = """
import os, shutil, signal, sys, tempfile
import torch._dynamo  # what creating an optimizer imports: 2-4 s, once, before forking
import latentspace.cli, latentspace.diagnostics, latentspace.train  # import once, fork per kill

def killed_at(n, argv):
    count = 0
    def tick():
        nonlocal count
        count += 1
        if count == n:
            os.kill(os.getpid(), signal.SIGKILL)
    mkstemp, replace = tempfile.mkstemp, os.replace
    def counted_mkstemp(*args, **kwargs):
        made = mkstemp(*args, **kwargs)
        tick()  # an empty temp file: as a kill while writing it leaves
        return made
    def counted_replace(source, target):
        tick()  # the temp file written, not yet renamed
        replace(source, target)
        tick()  # renamed
    tempfile.mkstemp, os.replace = counted_mkstemp, counted_replace
    code = latentspace.cli.main(argv)
    print(count)
    sys.stdout.flush()
    os._exit(code)

# python runner.py KILLS ARGV...: for n = 1, 2, ... train ARGV into KILLS/killNNN (OUT in ARGV),
# killed at file operation n, until a run completes; prints that run's count of operations
base, argv = sys.argv[1], sys.argv[2:]
n = 1
while True:
    out = os.path.join(base, f"kill{n:03d}")
    pid = os.fork()
    if pid == 0:
        killed_at(n, [a if a != "OUT" else out for a in argv])
    _, status = os.waitpid(pid, 0)
    if not os.WIFSIGNALED(status):
        assert os.WEXITSTATUS(status) == 0, status
        shutil.rmtree(out)
        break
    n += 1
"""


def test_kill_at_every_file_operation_resumes_or_restarts_to_the_same_weights(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = tmp_path / "straight"
    argv = _train(data, straight)
    assert main(argv) == 0
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(RUNNER))
    kills = tmp_path / "kills"
    kills.mkdir()
    child = subprocess.run(
        [sys.executable, str(runner), str(kills), *_train(data, Path("OUT"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    folders = sorted(kills.iterdir())
    operations = int(child.stdout.split()[-1])
    assert len(folders) == operations >= 30  # every mkstemp and both sides of every rename
    restarted: list[str] = []
    # each killed child held the run's lock: resuming also shows a killed holder blocks nobody
    failed = [
        f"{f.name}: {problem}" for f in folders if (problem := _recover(f, argv, restarted, capsys))
    ]
    assert not failed, f"{len(failed)} of {operations} killed states lost:\n" + "\n".join(failed)
    assert restarted == ["kill001", "kill002"]  # killed before config.json first landed: no run


def _recover(
    folder: Path, argv: list[str], restarted: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    """Resume the killed run in `folder` (or start it again where the CLI says to) and say what
    differs from the uninterrupted run trained by `argv` ("" when nothing does)."""
    straight = argv[argv.index("--out") + 1]
    if (folder / runs.WEIGHTS).exists():
        try:
            runs.open_run(folder)  # a killed run can be used as it stands
        except RunError as error:
            return f"cannot be opened: {error}"
    if main(["train", "--resume", str(folder), "--quiet", "--no-report"]) != 0:
        err = capsys.readouterr().err
        if "start it again with the same" not in err:
            return f"neither resumable nor said to restart: {err.strip()}"
        if main([str(folder) if a == straight else a for a in argv]) != 0:
            return f"does not start again: {capsys.readouterr().err.strip()}"
        restarted.append(folder.name)
    if not _same_weights(Path(straight), folder):
        return "other final weights than the uninterrupted run"
    if [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]:
        return "a temp file is left"
    if [r["epoch"] for r in runs.read_metrics(folder)] != [1, 2]:
        return f"metrics.jsonl epochs {[r['epoch'] for r in runs.read_metrics(folder)]}"
    diagnostics = [r["epoch"] for r in read_diagnostics(folder)]
    return "" if diagnostics == [1, 2] else f"diagnostics.jsonl epochs {diagnostics}"


# ---- 3. Ctrl-C -----------------------------------------------------------------------------
def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_kept(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "prepare_data", ctrl_c)
    assert main(_train(data, out)) == 130
    err = capsys.readouterr().err
    assert "nothing was saved" in err and "--resume" not in err, err
    assert not out.exists()  # true to its word: no folder
    monkeypatch.undo()
    assert main(_train(data, out)) == 0  # the same command starts it again


# ---- 4. truncated and damaged records ----------------------------------------------------------
@pytest.mark.parametrize("name", ["metrics.jsonl", "diagnostics.jsonl"])
def test_a_truncated_last_line_is_dropped_with_a_warning(name: str, run: Path) -> None:
    path = run / name
    path.write_text(path.read_text()[:-20])  # what a killed appender leaves
    with pytest.warns(UserWarning, match=f"{name} line 2 is incomplete"):
        assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 0
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()][-1] == 3


@pytest.mark.parametrize("name", ["metrics.jsonl", "diagnostics.jsonl"])
@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("{broken", "line 1 is not valid JSON"),
        ("[1, 2]", "line 1 is an array, not a JSON object"),
        ('{"kind": "epoch", "train": {}}', "line 1 .*'epoch'"),
    ],
)
def test_a_damaged_record_is_one_line_naming_file_and_line(
    name: str, line: str, said: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / name
    path.write_text(line + "\n" + path.read_text())
    err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert name in err
    assert re.search(said, err), err


# ---- 5. where a new run may go ------------------------------------------------------------------
def test_out_that_is_not_a_run_is_refused_and_untouched(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my page")
    (mine / "notes.txt").write_text("my notes")
    err = _error(capsys, _train(data, mine))
    assert "is not empty and is not a latentspace run" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "report.html"]
    assert (mine / "report.html").read_text() == "my page"

    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(make_images(20)):
        Image.fromarray(image).save(images / f"{i}.png")
    err = _error(capsys, _train(images, images / "run"))
    assert "inside the dataset folder" in err and not (images / "run").exists()

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    err = _error(capsys, _train(data, link))
    assert "symbolic link" in err and not (tmp_path / "nowhere").exists()


# ---- 6. one-line errors -------------------------------------------------------------------------
@pytest.fixture
def read_only(run: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The run folder made read-only: chmod for a normal user, and (root ignores the mode) every
    opening of a file in it for writing refused the way the kernel refuses it."""
    opener = os.open

    def refusing(path: str | Path, flags: int, *args: Any, **kwargs: Any) -> int:
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writing and Path(path).resolve().parent == run.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return opener(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    run.chmod(0o555)
    yield run
    run.chmod(0o755)


@pytest.mark.parametrize("command", ["evaluate", "report", "resume", "generate"])
def test_a_read_only_run_is_one_line(
    command: str, read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(read_only)
    argv = {
        "evaluate": ["evaluate", run, "--split", "val", "--nll-samples", "0"],
        "report": ["report", run],
        "resume": ["train", "--resume", run, "--epochs", "3", "--quiet"],
        "generate": ["generate", run, "-n", "4", "--out", f"{run}/samples.png"],
    }[command]
    before = sorted(p.name for p in read_only.iterdir())
    err = _error(capsys, argv)
    assert f"cannot write {run}/" in err and "read-only" in err, err
    assert sorted(p.name for p in read_only.iterdir()) == before


def test_a_full_disk_while_training_and_resuming_is_one_line(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full)  # trainer_state.pt
        err = _error(capsys, _train(data, out))
    assert f"cannot write {out}/trainer_state.pt: No space left on device" in err
    assert main(_train(data, out, 1)) == 0  # nothing was committed: the same command restarts
    with monkeypatch.context() as patch:
        patch.setattr(safetensors.torch, "save_file", full)
        err = _error(capsys, ["train", "--resume", str(out), "--epochs", "2", "--quiet"])
    assert f"cannot write {out}/model.safetensors: No space left on device" in err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-report"]) == 0
    assert [r["epoch"] for r in runs.read_metrics(out)] == [1, 2]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model", None),
        ("image_shape", [1, "a"]),
        ("image_shape", [0, 12, 12]),
        ("image_shape", "12x12"),
    ],
)
def test_a_damaged_config_json_is_one_line(
    key: str, value: object, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / runs.CONFIG
    document = json.loads(path.read_text())
    if key == "model":
        document["config"]["model"] = value
    else:
        document[key] = value
    path.write_text(json.dumps(document))
    assert "config.json" in _error(capsys, ["info", str(run)])


def test_damaged_weights_metadata_and_trainer_state_are_one_line(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _weights(run)
    safetensors.torch.save_file(weights, str(run / runs.WEIGHTS), metadata={"epoch": "two"})
    assert "model.safetensors" in _error(capsys, ["info", str(run)])
    safetensors.torch.save_file(weights, str(run / runs.WEIGHTS), metadata={"epoch": "2"})
    state = torch.load(run / runs.STATE, weights_only=True)
    del state["optimizers"]
    torch.save(state, run / runs.STATE)
    err = _error(capsys, ["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert "trainer_state.pt lacks 'optimizers'" in err


def test_nan_weights_are_refused_before_any_result_is_written(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _weights(run)
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name][0] = float("nan")
    safetensors.torch.save_file(weights, str(run / runs.WEIGHTS), metadata={"epoch": "2"})
    metrics = (run / runs.METRICS).read_text()
    err = _error(capsys, ["evaluate", str(run), "--split", "val", "--nll-samples", "0"])
    assert f"model.safetensors: {name} holds NaN" in err
    assert (run / runs.METRICS).read_text() == metrics
    _error(capsys, ["generate", str(run), "-n", "4", "--out", str(tmp_path / "nan.png")])
    assert not (tmp_path / "nan.png").exists()
