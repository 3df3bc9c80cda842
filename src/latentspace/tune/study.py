"""Optuna studies over latentspace runs: storages, samplers, pruners and the worker loop.

Every trial is a normal run (`latentspace.train.train`) in DIR/trials/NNNN; a callback reports the
validation objective after each epoch and raises `optuna.TrialPruned` when the pruner says so
(the trainer has saved that epoch first). Workers are processes that share one study through its
storage:

- the default, an Optuna journal file in DIR, for one machine. It has no heartbeat, so a worker
  killed with -9 leaves its trial RUNNING; `fail_orphaned_trials` fails such trials at start-up
  when the pid/host recorded on the trial shows their worker is gone.
- any SQLAlchemy URL Optuna accepts (`postgresql://...`) for many machines, with Optuna's
  heartbeat: a trial whose worker stopped beating is failed and retried as a new WAITING trial
  (`RetryHeartbeatStaleTrialCallback`, which replaces the deprecated `RetryFailedTrialCallback`).

The trial count is a budget shared by all workers: a worker counts the trials and asks for a new
one under a lock, so N workers stop at exactly the requested count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from latentspace.config import Config, config_from_dict, config_to_dict
from latentspace.errors import ConfigError, LatentspaceError
from latentspace.tune.space import Space, load_space, parse_space

__all__ = [
    "DEFAULT_PRUNER",
    "DEFAULT_SAMPLER",
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "PruningCallback",
    "TuneOptions",
    "counted_trials",
    "database_url",
    "fail_orphaned_trials",
    "final_objective",
    "open_study",
    "options_for",
    "run_study",
    "run_trial",
]

SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "hyperband", "sha", "none")
# objective name -> the validation term reported after every epoch (what pruning compares).
# nll and fid are then measured once on the finished run: the VAE's importance-weighted NLL on
# the validation images (NLL_SAMPLES samples), or FID of FID_SAMPLES generated images against
# the held-out images in latentspace's own classifier features (latentspace.quality).
OBJECTIVES = {
    "val_loss": "total",
    "reconstruction": "reconstruction",
    "nll": "total",
    "fid": "total",
}
NLL_SAMPLES = 100
FID_SAMPLES = 2000
# Chosen by bench/tune_efficiency.py (docs/tuning.md has the numbers).
DEFAULT_SAMPLER = "gp"
DEFAULT_PRUNER = "none"
JOURNAL = "study.journal"
LOST = "lost"  # user attr on a FAIL trial that does not count towards the budget


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """Everything a worker needs, as primitives (workers are spawned processes)."""

    out: str
    study: str
    base: dict[str, Any]  # config_to_dict of the base config
    space: dict[str, Any]  # the parsed space file ({} = the default space)
    space_source: str = "default space"
    trials: int = 50
    timeout_s: float | None = None
    workers: int = 1
    storage: str | None = None  # None = the journal file in `out`
    sampler: str = DEFAULT_SAMPLER
    pruner: str = DEFAULT_PRUNER
    objective: str = "val_loss"
    seed: int | None = None
    threads: int = 1
    heartbeat_s: int = 30  # database storages: heartbeat interval; a trial is stale after 3x
    quiet: bool = False

    def base_config(self) -> Config:
        return config_from_dict(self.base, "base config")

    def load_space(self) -> Space:
        return parse_space(self.space, self.base_config(), self.space_source)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "tuning needs Optuna: pip install 'latentspace[tune]' (optuna, psycopg2-binary)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # workers print their own one-liners
    return optuna


@contextlib.contextmanager
def _quiet_optuna_warnings() -> Iterator[None]:
    """Heartbeats, GPSampler and the matplotlib plots are 'experimental' in Optuna 5: fine here."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# ---- storage, sampler, pruner ---------------------------------------------------------------
def open_storage(options: TuneOptions) -> Any:
    optuna = _optuna()
    if options.storage is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(options.out).mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(Path(options.out) / JOURNAL)))
    interval = options.heartbeat_s
    try:
        return optuna.storages.RDBStorage(
            database_url(options.storage),
            heartbeat_interval=interval,
            grace_period=3 * interval,  # a late beat on a busy machine is not a death
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
        )
    except ImportError as error:
        raise ConfigError(f"--storage {_safe_url(options.storage)}: {error}") from None
    except Exception as error:  # SQLAlchemy's OperationalError and friends
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot open --storage {_safe_url(options.storage)}: {first}") from None


def database_url(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg (3); use psycopg2 when only it is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
    return url


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


def make_sampler(name: str, seed: int | None) -> Any:
    optuna = _optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--sampler cmaes needs the cmaes package: pip install cmaes"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"--sampler {name!r} is not one of: {', '.join(SAMPLERS)}")


def make_pruner(name: str, max_epochs: int) -> Any:
    optuna = _optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r} is not one of: {', '.join(PRUNERS)}")


def _signature(options: TuneOptions, space: Space) -> dict[str, Any]:
    """What makes two runs of `tune` the same study (checked on resume)."""
    document = {"base": options.base, "space": space.describe(), "objective": options.objective}
    result: dict[str, Any] = json.loads(json.dumps(document))
    return result


def open_study(
    options: TuneOptions, *, worker: int = 0, create: bool = False, with_storage: bool = False
) -> Any:
    """Create (or load) the study; a resumed study must have the same base config and space."""
    optuna = _optuna()
    space = options.load_space()
    storage = open_storage(options)
    seed = None if options.seed is None else options.seed + worker
    sampler = make_sampler(options.sampler, seed)
    pruner = make_pruner(options.pruner, space.max_epochs(options.base_config()))
    with _quiet_optuna_warnings():
        study = optuna.create_study(
            storage=storage,
            study_name=options.study,
            sampler=sampler,
            pruner=pruner,
            direction="minimize",
            load_if_exists=True,
        )
    if create:
        signature = _signature(options, space)
        saved = study.user_attrs.get("latentspace")
        if saved is None:
            study.set_user_attr("latentspace", signature)
        elif saved != signature:
            changed = [k for k in signature if saved.get(k) != signature[k]]
            raise ConfigError(
                f"study {options.study!r} was started with a different {changed[0]} "
                f"({'config' if changed[0] == 'base' else changed[0]}); resume it with the same "
                "--config/--space/--objective, or choose a new --study"
            )
    return (study, storage) if with_storage else study


# ---- the budget ------------------------------------------------------------------------------
def _lost_numbers(trials: list[Any]) -> set[int]:
    """Trials that do not count towards the budget: interrupted or orphaned (marked LOST), and
    stale trials that Optuna's heartbeat retried as a new trial."""
    lost = {t.number for t in trials if t.user_attrs.get(LOST)}
    for trial in trials:
        lost.update(trial.system_attrs.get("retry_history", []))
    return lost


def counted_trials(trials: list[Any]) -> list[Any]:
    """The trials that use up the budget: everything except lost FAIL trials."""
    from optuna.trial import TrialState

    lost = _lost_numbers(trials)
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in lost)]


@contextlib.contextmanager
def _budget_lock(options: TuneOptions) -> Iterator[None]:
    """Serialises "count the trials, then reserve one" across workers: a file lock beside the
    journal, a PostgreSQL advisory lock on PostgreSQL; other databases may overshoot by a few."""
    if options.storage is None:
        import fcntl

        with open(Path(options.out) / ".budget.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if not options.storage.startswith(("postgresql", "postgres")):
        yield
        return
    import sqlalchemy

    url = database_url(options.storage)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    key = zlib.crc32(f"latentspace:{options.study}".encode()) & 0x7FFFFFFF
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


def next_trial(study: Any, options: TuneOptions) -> Any | None:
    """Ask for a trial if the budget allows, else None. Under the lock the count and the ask are
    one step, so workers stop at exactly `options.trials`; a WAITING trial (a retry of a stale
    one) is taken first and does not add to the count."""
    from optuna.trial import TrialState

    with _budget_lock(options):
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if len(counted_trials(trials)) < options.trials or waiting:
            return study.ask()
    return None


# ---- orphans ---------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The process start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return f"{fields[0]}:{fields[19]}"  # state, starttime


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    if now is None:
        return True  # no /proc: trust kill(0)
    state, _, start = now.partition(":")
    if state in ("Z", "X"):  # killed, not yet reaped
        return False
    return started is None or start == started.partition(":")[2]


def fail_orphaned_trials(study: Any, *, stale_after_s: float = 120.0) -> list[int]:
    """Fail RUNNING trials whose worker on this host is gone (the journal has no heartbeat).

    A trial records its worker's host, pid and process start time when it starts; a trial from
    another host is left alone, one that never recorded a worker is failed after `stale_after_s`.
    Returns the numbers of the trials failed."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if "pid" in attrs:
            if attrs.get("host") != host or _alive(int(attrs["pid"]), attrs.get("pid_start")):
                continue
            reason = f"worker {attrs['host']}:{attrs['pid']} died"
        else:
            started = trial.datetime_start
            if started is None or time.time() - started.timestamp() < stale_after_s:
                continue
            reason = "worker died before recording itself"
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, LOST, reason)
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # another process finished or failed it first
            continue
        failed.append(trial.number)
    return failed


# ---- one trial -------------------------------------------------------------------------------
class PruningCallback:
    """A trainer callback: report the validation objective each epoch, prune when told."""

    def __init__(self, trial: Any, term: str) -> None:
        self.trial = trial
        self.term = term
        self.value = math.nan
        self.epochs = 0

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        import optuna

        if "val" not in record:
            raise ConfigError("tuning needs validation images: set data.val_fraction > 0")
        self.value = float(record["val"][self.term])
        self.epochs = int(record["epoch"])
        self.trial.report(self.value, self.epochs)
        # after the last epoch pruning saves nothing and would discard a finished trial
        last = self.epochs >= trainer.train_config.epochs
        if not last and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {self.epochs}: {self.value:.5g}")


class _Objective:
    """Runs one trial as a normal latentspace run in DIR/trials/NNNN; returns its final value."""

    def __init__(self, options: TuneOptions, base: Config, space: Space) -> None:
        self.options = options
        self.base = base
        self.space = space
        self.term = OBJECTIVES[options.objective]

    def claim(self, trial: Any) -> None:
        """Record the worker on the trial, so a dead worker's trial can be recognised."""
        pid = os.getpid()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", pid)
        trial.set_user_attr("pid_start", _process_start(pid))
        trial.set_user_attr("run_dir", str(self.run_dir(trial)))

    def run_dir(self, trial: Any) -> Path:
        return Path(self.options.out) / "trials" / f"{trial.number:04d}"

    def __call__(self, trial: Any) -> float:
        from latentspace.config import apply_overrides
        from latentspace.train import train

        callback = PruningCallback(trial, self.term)
        start = time.perf_counter()
        try:
            overrides = self.space.suggest(trial)
            config = apply_overrides(
                self.base, [*overrides, f"train.threads={self.options.threads}"]
            )
            train(config, self.run_dir(trial), callbacks=[callback], quiet=True)
        finally:
            trial.set_user_attr("epochs", callback.epochs)
            trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 3))
        if self.options.objective in ("nll", "fid"):
            value = final_objective(self.run_dir(trial), self.options.objective)
            trial.set_user_attr(self.options.objective, value)
            return value
        return callback.value


def final_objective(run_dir: Path, objective: str) -> float:
    """The nll or fid of a finished run, also appended to its metrics as an evaluation record."""
    from latentspace.runs import append_metrics, open_run

    run = open_run(run_dir)
    if objective == "nll":
        from latentspace.evaluate import evaluate

        record = evaluate(run, split="val", nll_samples=NLL_SAMPLES)
        append_metrics(run_dir, record)
        return float(record["nll"])
    from latentspace.quality import evaluate_quality

    report = evaluate_quality(run, n=FID_SAMPLES, log=lambda line: None)
    append_metrics(run_dir, {"kind": "quality", "fid": report.fid, "features": report.features})
    return float(report.fid)


class _Heartbeat:
    """Optuna's heartbeat for database storages: a thread records that the trial is alive."""

    def __init__(self, storage: Any, trial: Any, interval: float | None) -> None:
        self.storage, self.trial_id, self.interval = storage, trial._trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        assert self.interval is not None
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried on the next one
                self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeat:
        if self.interval is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.interval is not None:
            self.stop.set()
            self.thread.join()


def run_trial(study: Any, storage: Any, objective: _Objective, options: TuneOptions) -> Any | None:
    """Ask (within the budget), train, tell. Returns the finished trial, or None when the budget
    is spent. KeyboardInterrupt marks the trial FAIL (not counted) and propagates."""
    optuna = _optuna()
    heartbeat = options.heartbeat_s if options.storage is not None else None
    if heartbeat is not None:
        optuna.storages.fail_stale_trials(study)  # fails and retries trials of dead workers
    trial = next_trial(study, options)
    if trial is None:
        return None
    state, value = optuna.trial.TrialState.COMPLETE, math.nan
    with _Heartbeat(storage, trial, heartbeat):
        objective.claim(trial)
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = optuna.trial.TrialState.PRUNED
        except KeyboardInterrupt:
            trial.set_user_attr(LOST, "interrupted (Ctrl-C)")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        except Exception as error:  # the trial fails, the study goes on
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
            state = optuna.trial.TrialState.FAIL
    if state == optuna.trial.TrialState.COMPLETE and not math.isfinite(value):
        trial.set_user_attr("error", f"the objective is {value}")
        state = optuna.trial.TrialState.FAIL
    if state == optuna.trial.TrialState.COMPLETE:
        study.tell(trial, value)
    else:
        study.tell(trial, state=state)
    return study._storage.get_trial(trial._trial_id)


# ---- workers ---------------------------------------------------------------------------------
def _describe_trial(trial: Any, best: Any | None) -> str:
    state = trial.state.name.lower()
    epochs = trial.user_attrs.get("epochs", 0)
    value = "" if trial.value is None else f" {trial.value:.5g}"
    line = f"trial {trial.number:4d} {state:8s}{value} after {epochs} epochs"
    if "error" in trial.user_attrs:
        line += f" ({trial.user_attrs['error'].splitlines()[0][:120]})"
    if best is not None:
        line += f"  best {best.value:.5g} (trial {best.number})"
    return line


def _best(study: Any) -> Any | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def run_worker(options: TuneOptions, worker: int = 0, deadline: float | None = None) -> int:
    """Run trials until the shared budget is spent or the deadline passes; returns trials run."""
    from latentspace.tune.report import write_tables

    torch.set_num_threads(max(options.threads, 1))
    count = 0
    with _quiet_optuna_warnings():
        study, storage = open_study(options, worker=worker, with_storage=True)
        base, space = options.base_config(), options.load_space()
        objective = _Objective(options, base, space)
        while deadline is None or time.time() < deadline:
            trial = run_trial(study, storage, objective, options)
            if trial is None:
                break
            count += 1
            if not options.quiet:
                print(_describe_trial(trial, _best(study)), flush=True)
            write_tables(study, options, base, space)
    return count


def _worker_process(options: TuneOptions, worker: int, deadline: float | None) -> None:
    try:
        run_worker(options, worker, deadline)
    except KeyboardInterrupt:
        sys.exit(130)
    except LatentspaceError as error:
        print(f"latentspace: worker {worker}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_study(options: TuneOptions) -> Any:
    """Create or resume the study, fail orphaned trials, run the workers, return the study.

    workers=1 runs in this process; more are spawned processes. KeyboardInterrupt propagates
    after the workers have stopped (each marks its running trial)."""
    base = options.base_config()
    load_space(None, base)  # the default space must fit the base config's model family
    if options.workers < 1 or options.trials < 1:
        raise ConfigError("--workers and --trials must be at least 1")
    if options.objective not in OBJECTIVES:
        raise ConfigError(
            f"--objective {options.objective!r} is not one of: {', '.join(OBJECTIVES)}"
        )
    if base.data.val_fraction <= 0:
        raise ConfigError("tuning needs validation images: set data.val_fraction > 0")
    if options.objective == "nll" and base.model_name != "vae":
        raise ConfigError(
            f"--objective nll needs a VAE (the base config trains {base.model_name!r}); "
            "use val_loss"
        )
    if options.objective == "fid":
        from latentspace.classifier import feature_network

        # trained once and cached before the workers start, so they do not race to train it
        feature_network(base.data.dataset, log=lambda line: print(line, flush=True))
    from latentspace.train import prepare_data

    prepare_data(base)  # a missing dataset is one clear error, not N failed trials
    with _quiet_optuna_warnings():
        study = open_study(options, create=True)
        if options.storage is None:
            lost = fail_orphaned_trials(study)
        else:
            _optuna().storages.fail_stale_trials(study)
            lost = []
    if lost and not options.quiet:
        print(f"marked trials {lost} as failed: their worker died (they are not counted)")
    deadline = None if options.timeout_s is None else time.time() + options.timeout_s
    if options.workers == 1:
        run_worker(options, 0, deadline)
        return study
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_process, args=(options, i, deadline), name=f"tune-{i}")
        for i in range(options.workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        # the workers got the same SIGINT: give them time to mark their running trials
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
        raise
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None)]
    if failed and not options.quiet:
        print(f"warning: {len(failed)} worker(s) exited with status {failed}", file=sys.stderr)
    return study


def options_for(
    base: Config, space_raw: dict[str, Any], space_source: str, **kwargs: Any
) -> TuneOptions:
    """TuneOptions from a Config and a parsed space file (checked now, before any worker)."""
    parse_space(space_raw, base, space_source)
    return TuneOptions(
        base=config_to_dict(base), space=space_raw, space_source=space_source, **kwargs
    )
