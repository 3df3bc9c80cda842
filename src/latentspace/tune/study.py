"""Optuna studies over latentspace runs: options, storages, samplers, pruners and the budget.

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
import hashlib
import json
import random
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentspace.config import Config, config_from_dict, config_to_dict
from latentspace.errors import ConfigError
from latentspace.models import MODELS, GenerativeModel
from latentspace.tune.space import Space, parse_space

__all__ = [
    "DEFAULT_PRUNER",
    "DEFAULT_SAMPLER",
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "TuneOptions",
    "check_objective",
    "counted_trials",
    "database_url",
    "default_objective",
    "next_trial",
    "open_study",
    "options_for",
    "pruning_term",
    "sampler_seed",
]

SAMPLERS = ("tpe", "random", "gp", "cmaes")
PRUNERS = ("median", "hyperband", "sha", "none")
# What a study minimises. val_loss: the validation term the model family declares it minimises
# (`GenerativeModel.monitor`); reconstruction: that validation term; nll and fid are measured once
# on the finished run: the importance-weighted NLL on the validation images (NLL_SAMPLES samples;
# families with a likelihood), or FID of FID_SAMPLES generated images against the held-out images
# in latentspace's own classifier features (latentspace.analysis.quality). After every epoch
# pruning compares `pruning_term`: the family's monitored term, or, for a family without one
# (a GAN's losses are minimised by no single player), the FID of PRUNE_FID_SAMPLES samples.
OBJECTIVES = ("val_loss", "reconstruction", "nll", "fid")
NLL_SAMPLES = 100
FID_SAMPLES = 2000
PRUNE_FID_SAMPLES = 500
# Measured with bench/tune_efficiency.py (issue 6's protocol, docs/tuning.md has the numbers):
# random sampling with successive halving reached plain random search's median result with 3x
# fewer epochs in 9 of 10 seeds (median 5.9x) and ended lower than it (GP + successive halving
# tied with it, its first trials being the same random ones). TPE + Hyperband ended lower still,
# but reached 3x in 7 of 10 seeds.
DEFAULT_SAMPLER = "random"
DEFAULT_PRUNER = "sha"
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
    objective: str = "val_loss"  # one of OBJECTIVES; `default_objective` picks it per family
    seed: int | None = None
    threads: int = 1
    heartbeat_s: int = 30  # database storages: heartbeat interval; a trial is stale after 3x
    quiet: bool = False
    log: tuple[str, ...] = ()  # live dashboards per trial (latentspace.dashboards.LOGGERS)

    def mlflow_uri(self) -> str:
        """One local MLflow store for the whole study: DIR/mlflow.db, one MLflow run a trial."""
        return f"sqlite:///{(Path(self.out) / 'mlflow.db').resolve()}"

    def base_config(self) -> Config:
        return config_from_dict(self.base, "base config")

    def load_space(self) -> Space:
        return parse_space(self.space, self.base_config(), self.space_source)


def _family(config: Config) -> type[GenerativeModel]:
    return MODELS[config.model_name]


def default_objective(config: Config) -> str:
    """val_loss for a family that declares a monitored validation term, else fid."""
    return "val_loss" if _family(config).monitor is not None else "fid"


def pruning_term(objective: str, config: Config) -> str | None:
    """The validation term reported after every epoch, or None: a sample FID instead."""
    if objective == "reconstruction":
        return "reconstruction"
    return _family(config).monitor


def check_objective(objective: str, config: Config) -> None:
    """A one-line error when the base config's family cannot be tuned on `objective`."""
    family = _family(config)
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective {objective!r} is not one of: {', '.join(OBJECTIVES)}")
    if objective == "nll" and not family.has_likelihood():
        raise ConfigError(
            f"--objective nll needs a family with a likelihood (the base config trains "
            f"{family.name!r}, which has none); use {default_objective(config)}"
        )
    if objective in ("val_loss", "reconstruction") and family.monitor is None:
        raise ConfigError(
            f"--objective {objective}: a {family.name} model has no validation loss that it "
            "minimises; tune it on the quality of its samples with --objective fid"
        )


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
    for attempt in range(5):
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
        except Exception as error:  # SQLAlchemy's OperationalError, IntegrityError, ...
            # machines that start together race to create Optuna's tables: the loser retries
            racing = "already exists" in str(error) or "UniqueViolation" in str(error)
            if racing and attempt < 4:
                time.sleep(1 + random.random() * 2)
                continue
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise ConfigError(
                f"cannot open --storage {_safe_url(options.storage)}: {first}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


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


def sampler_seed(seed: int, worker: int, done: int) -> int:
    """The seed of worker `worker`'s sampler in a study that already holds `done` trials.

    A fresh study (done = 0) seeds worker i with SEED+i, so the same command reproduces it. A
    seeded sampler replays its random stream from the start whatever the study holds (the
    random sampler and every other sampler's random start-up trials), so a resumed or extended
    study seeded the same way would repeat its first trials exactly: there the seed also mixes
    in `done`, which differs at every resumption."""
    if done == 0:
        return seed + worker
    digest = hashlib.sha256(f"latentspace-tune:{seed}:{worker}:{done}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


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
    pruner = make_pruner(options.pruner, space.max_epochs(options.base_config()))
    with _quiet_optuna_warnings():
        study = optuna.create_study(
            storage=storage,
            study_name=options.study,
            sampler=make_sampler(options.sampler, None),
            pruner=pruner,
            direction="minimize",
            load_if_exists=True,
        )
        if options.seed is not None:
            # seeded once the study's size is known: see sampler_seed
            done = len(study.get_trials(deepcopy=False))
            study.sampler = make_sampler(options.sampler, sampler_seed(options.seed, worker, done))
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
                "--config/--space/--objective, or start a new study in another --out"
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
            with warnings.catch_warnings():
                # Optuna expects heartbeats from Study.optimize; workers.run_trial keeps its own
                # heartbeat thread, as optimize does, because the ask must happen under the lock
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                return study.ask()
    return None


def options_for(
    base: Config, space_raw: dict[str, Any], space_source: str, **kwargs: Any
) -> TuneOptions:
    """TuneOptions from a Config and a parsed space file (checked now, before any worker)."""
    parse_space(space_raw, base, space_source)
    return TuneOptions(
        base=config_to_dict(base), space=space_raw, space_source=space_source, **kwargs
    )
