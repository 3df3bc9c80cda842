"""Hyperparameter tuning with Optuna: `latentspace tune` and `latentspace tune-report`.

    from latentspace.tune import options_for, run_study, write_report
    options = options_for(base_config, {}, "default space", out="tune/vae", study="vae", trials=50)
    study = run_study(options)

See docs/tuning.md for the space file, workers, storages and the cluster recipe.
"""

from __future__ import annotations

from latentspace.tune.report import config_to_toml, write_report, write_tables
from latentspace.tune.space import DEFAULT_SPACE, Space, load_space, parse_space
from latentspace.tune.study import (
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    TuneOptions,
    counted_trials,
    open_study,
    options_for,
)
from latentspace.tune.workers import PruningCallback, fail_orphaned_trials, run_study

__all__ = [
    "DEFAULT_PRUNER",
    "DEFAULT_SAMPLER",
    "DEFAULT_SPACE",
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "PruningCallback",
    "Space",
    "TuneOptions",
    "config_to_toml",
    "counted_trials",
    "fail_orphaned_trials",
    "load_space",
    "open_study",
    "options_for",
    "parse_space",
    "run_study",
    "write_report",
    "write_tables",
]
