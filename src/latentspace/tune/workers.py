"""Workers: processes that run trials of one shared study until its budget is spent.

Each trial is asked under the budget lock (`study.next_trial`), trained as a normal run by
`_Objective` (its `PruningCallback` reports each epoch and raises `optuna.TrialPruned` when the
pruner says so) and told back, with Optuna's heartbeat on database storages. `run_study` fails
the trials of dead workers on start-up (`fail_orphaned_trials`: the journal has no heartbeat)
and runs one worker in-process or several as spawned processes.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from latentspace.config import Config
from latentspace.errors import ConfigError, LatentspaceError
from latentspace.progress import parallel_seconds_left, time_left
from latentspace.tune.space import Space, load_space
from latentspace.tune.study import (
    FID_SAMPLES,
    LOST,
    NLL_SAMPLES,
    PRUNE_FID_SAMPLES,
    TuneOptions,
    _optuna,
    _quiet_optuna_warnings,
    check_objective,
    counted_trials,
    next_trial,
    open_study,
    pruning_term,
)

__all__ = [
    "PruningCallback",
    "fail_orphaned_trials",
    "final_objective",
    "run_study",
    "run_trial",
    "run_worker",
]


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


def fail_orphaned_trials(
    study: Any, *, stale_after_s: float = 120.0, stopped: tuple[int, ...] = ()
) -> list[int]:
    """Fail RUNNING trials whose worker on this host is gone (the journal has no heartbeat).

    A trial records its worker's host, pid and process start time when it starts; a trial from
    another host is left alone, one that never recorded a worker is failed after `stale_after_s`.
    `stopped`: pids known to have stopped working (this process after Ctrl-C). Returns the
    numbers of the trials failed."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if "pid" in attrs:
            pid = int(attrs["pid"])
            if attrs.get("host") != host or (
                pid not in stopped and _alive(pid, attrs.get("pid_start"))
            ):
                continue
            reason = (
                "interrupted (Ctrl-C)" if pid in stopped else f"worker {attrs['host']}:{pid} died"
            )
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
    """A trainer callback: report the validation objective each epoch, prune when told.

    term: the validation term to report, or None for a model family that minimises none (a
    GAN): the FID of PRUNE_FID_SAMPLES samples against as many held-out images is reported."""

    def __init__(self, trial: Any, term: str | None) -> None:
        self.trial = trial
        self.term = term
        self.value = math.nan
        self.epochs = 0
        self.sample_fid: Any = None  # a SampleFID, made at the first epoch that needs it

    def _score(self, trainer: Any, record: dict[str, Any]) -> float:
        if self.term is None:
            if self.sample_fid is None:  # the held-out images and features, read once a trial
                from latentspace.analysis.quality import SampleFID

                self.sample_fid = SampleFID(trainer.config, trainer.model, n=PRUNE_FID_SAMPLES)
            return self.sample_fid(trainer.model)
        if "val" not in record:
            raise ConfigError("tuning needs validation images: set data.val_fraction > 0")
        return float(record["val"][self.term])

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        import optuna

        self.value = self._score(trainer, record)
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
        self.term = pruning_term(options.objective, base)

    def claim(self, trial: Any) -> None:
        """Record the worker on the trial, so a dead worker's trial can be recognised."""
        pid = os.getpid()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", pid)
        trial.set_user_attr("pid_start", _process_start(pid))
        trial.set_user_attr("run_dir", str(self.run_dir(trial)))

    def _loggers(self, trial: Any) -> list[object]:
        """The live dashboards --log asks for, for this trial's run (TensorBoard in the trial's
        folder; MLflow in the study's one store, experiment = the study's name)."""
        return _study_loggers(self.options, self.run_dir(trial))

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
            loggers = self._loggers(trial)
            try:
                # the loggers come first, so a pruned trial's last epoch is logged too
                train(config, self.run_dir(trial), callbacks=[*loggers, callback], quiet=True)
            finally:
                if loggers:
                    from latentspace.dashboards import close_loggers

                    close_loggers(loggers, self.run_dir(trial))
        finally:
            trial.set_user_attr("epochs", callback.epochs)
            trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 3))
        if self.options.objective in ("nll", "fid"):
            value = final_objective(self.run_dir(trial), self.options.objective)
            trial.set_user_attr(self.options.objective, value)
            return value
        return callback.value


def _study_loggers(options: TuneOptions, run_dir: Path) -> list[object]:
    if not options.log:
        return []
    from latentspace.dashboards import make_loggers

    return make_loggers(
        options.log, run_dir, tracking_uri=options.mlflow_uri(), experiment=options.study
    )


def final_objective(run_dir: Path, objective: str) -> float:
    """The nll or fid of a finished run, also appended to its metrics as an evaluation record."""
    from latentspace.runs import append_metrics, open_run

    run = open_run(run_dir)
    if objective == "nll":
        from latentspace.analysis.evaluate import evaluate

        record = evaluate(run, split="val", nll_samples=NLL_SAMPLES, quiet=True)
        append_metrics(run_dir, record)
        return float(record["nll"])
    from latentspace.analysis.quality import evaluate_quality

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
    try:
        with _Heartbeat(storage, trial, heartbeat):
            objective.claim(trial)
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


def _study_progress(study: Any, options: TuneOptions, deadline: float | None) -> str:
    """'  3/20 trials (about 4 min left)': the study's finished trials of its budget, and the
    time left for all of it at the mean duration of its finished trials, run `workers` at a
    time (never past --timeout)."""
    trials = counted_trials(study.get_trials(deepcopy=False))
    finished = [t for t in trials if t.state.is_finished()]
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in finished
        if t.datetime_start is not None and t.datetime_complete is not None
    ]
    left = options.trials - len(finished)
    seconds = parallel_seconds_left(
        durations, left, options.workers, None if deadline is None else deadline - time.time()
    )
    return f"  {len(finished)}/{options.trials} trials" + (time_left(seconds) if left > 0 else "")


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
                line = _describe_trial(trial, _best(study))
                print(line + _study_progress(study, options, deadline), flush=True)
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
    check_objective(options.objective, base)
    if "mlflow" in options.log:  # made once, so workers do not race to create its tables
        from latentspace.dashboards import prepare_mlflow_store

        prepare_mlflow_store(options.mlflow_uri(), options.study)
    if base.data.val_fraction <= 0:
        raise ConfigError("tuning needs validation images: set data.val_fraction > 0")
    if options.objective == "fid":
        from latentspace.analysis.classifier import feature_network

        # trained once and cached before the workers start, so they do not race to train it
        feature_network(base.data.dataset, log=lambda line: print(line, flush=True))
    from latentspace.data import prepare_data

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
    try:
        _run_workers(options, deadline)
    except KeyboardInterrupt:
        # a trial interrupted between two steps of a worker may still read RUNNING
        with _quiet_optuna_warnings():
            fail_orphaned_trials(study, stopped=(os.getpid(),))
        raise
    return study


def _run_workers(options: TuneOptions, deadline: float | None) -> None:
    if options.workers == 1:
        run_worker(options, 0, deadline)
        return
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
        # Ctrl-C in a terminal reaches the workers too; a SIGINT sent to this process alone is
        # passed on after a moment. Either way each worker marks its running trial and stops.
        for process in processes:
            process.join(timeout=5)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
        raise
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None)]
    if failed and not options.quiet:
        print(f"warning: {len(failed)} worker(s) exited with status {failed}", file=sys.stderr)
