"""Tuning efficiency: training epochs needed to reach a target validation loss, against plain
random search without pruning, same space, same epoch budget, several seeds.

Protocol (issue 6): an MLP autoencoder on scikit-learn's digits (8x8), the default search space
with a fixed number of epochs per trial (20) and a budget of 1200 epochs per study. Each setting
(sampler/pruner) runs one study per seed through latentspace's own trial objective (every trial a
real run) until the studies' epochs sum to the budget. The target is the median over seeds of
random search's final best; a study's cost is the epochs spent when a completed trial first
reached the target. Random search's cost is the median over its seeds (a seed that never reached
the target counts as the budget, so this is a lower bound); a setting's ratio on a seed is that
over the setting's cost on the seed. Also printed: the ratio against the random-search study with
the same seed number (>= where that one never reached the target), which pairs unrelated studies
and mostly measures random search's luck.

    nice -n 10 .venv/bin/python bench/tune_efficiency.py --seeds 10 \
        --settings random/sha,gp/none,gp/sha,tpe/sha,tpe/hyperband --json eff.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import latentspace as ls
from latentspace.tune.study import _quiet_optuna_warnings, open_study, options_for
from latentspace.tune.workers import _Objective, run_trial


def digits_npz(directory: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    path = directory / "digits.npz"
    np.savez(path, images=images, labels=digits.target)
    return path


def run_setting(
    setting: str, seed: int, base: ls.Config, trial_epochs: int, budget: int, root: Path
) -> list[tuple[int, float]]:
    """One study of `budget` epochs; returns (epochs spent so far, value) after each completed
    trial."""
    import optuna

    sampler, pruner = setting.split("/")
    out = root / f"{setting.replace('/', '-')}-{seed}"
    options = options_for(
        base,
        {"train": {"epochs": trial_epochs}},
        "bench space",
        out=str(out),
        study="bench",
        trials=10**6,
        sampler=sampler,
        pruner=pruner,
        # other seeds than the baseline's: the samplers' random start-up trials would otherwise
        # repeat random search's first trials and tie with it whenever those reach the target
        seed=seed if setting == "random/none" else 1000 + seed,
        quiet=True,
    )
    history: list[tuple[int, float]] = []
    with _quiet_optuna_warnings():
        study, storage = open_study(options, create=True, with_storage=True)
        objective = _Objective(options, options.base_config(), options.load_space())
        spent = failed = 0
        errors: set[str] = set()
        while spent < budget:
            trial = run_trial(study, storage, objective, options)
            spent += int(trial.user_attrs.get("epochs", 0)) or 1  # a failed trial costs >= 1
            if trial.state == optuna.trial.TrialState.COMPLETE:
                history.append((spent, float(trial.value)))
            elif trial.state == optuna.trial.TrialState.FAIL:
                failed += 1
                errors.add(str(trial.user_attrs.get("error", "?")).splitlines()[0][:200])
    # a diverging trial may fail; a study where most do measures a broken setup, not a sampler
    if failed > len(history):
        raise RuntimeError(
            f"{setting} seed {seed}: {failed} failed trials, {len(history)} completed: "
            + "; ".join(sorted(errors)[:3])
        )
    return history


def epochs_to_reach(history: list[tuple[int, float]], target: float) -> int | None:
    for spent, value in history:
        if value <= target:
            return spent
    return None


def report(
    histories: dict[str, dict[int, list[tuple[int, float]]]],
    epochs_run: dict[str, dict[int, int]],
    seeds: list[int],
    settings: list[str],
    trial_epochs: int,
    budget: int,
) -> None:
    """Prints the target, random search's cost and, per setting, the per-seed ratios."""
    finals = [min(v for _, v in histories["random/none"][s]) for s in seeds]
    target = statistics.median(finals)
    print(
        f"\ntarget: {target:.4f} (median over seeds of random search's best after {budget} epochs)"
    )
    print(f"budget {budget} epochs per study, {trial_epochs}-epoch trials, seeds {seeds}")

    def cost(setting: str, seed: int) -> int | None:
        """Epochs to the target within the setting's common horizon (studies may run longer)."""
        horizon = min(epochs_run[setting][s] for s in seeds)
        return epochs_to_reach([p for p in histories[setting][seed] if p[0] <= horizon], target)

    base_costs = [cost("random/none", s) for s in seeds]
    # random search's epochs to the target: the median over its seeds, a seed that never got
    # there counted as the budget (censored: the true value is at least this)
    reference = float(statistics.median(c or budget for c in base_costs))
    cells = " ".join("-" if c is None else str(c) for c in base_costs)
    print(
        f"random/none    epochs to the target per seed: {cells}; "
        f"median {reference:.0f} (not reached = the budget); "
        f"{sum(c is not None and 3 * c <= reference for c in base_costs)}/{len(seeds)} within a "
        "third of that"
    )
    for setting in settings:
        costs = [cost(setting, s) for s in seeds]
        horizon = min(epochs_run[setting][s] for s in seeds)
        if horizon >= budget:
            finals_s = [min((v for _, v in histories[setting][s]), default=math.nan) for s in seeds]
            best = f"median best {statistics.median(finals_s):.4f}"
        else:
            best = f"studies stopped at {horizon} epochs ('-': not reached by then)"
            if 3 * horizon < reference:
                best += ", too few to decide >=3x"
        # against random search's median cost: the criterion
        ratios = [0.0 if c is None else reference / c for c in costs]
        # against the random-search study with the same seed number (the seeds share nothing,
        # samplers use 1000 + seed): shown for comparison, it mostly measures random's luck
        paired = [
            0.0 if c is None else (b or budget) / c for c, b in zip(costs, base_costs, strict=True)
        ]
        print(
            f"{setting:14s} epochs to the target per seed: "
            f"{' '.join('-' if c is None else str(c) for c in costs)}; reached in "
            f"{sum(c is not None for c in costs)}/{len(seeds)}, {best} "
            f"(random's median best {statistics.median(finals):.4f})"
        )
        print(
            f"{'':14s} ratio to random's median cost: "
            f"{' '.join('-' if c is None else f'{r:.2f}' for c, r in zip(costs, ratios, strict=True))}"
            f"; >=3x in {sum(r >= 3 for r in ratios)}/{len(seeds)}, median {statistics.median(ratios):.2f}"
        )
        print(
            f"{'':14s} paired ratio (same seed number): "
            + " ".join(
                "-" if c is None else f"{'>=' if b is None else ''}{r:.2f}"
                for c, b, r in zip(costs, base_costs, paired, strict=True)
            )
            + f"; >=3x in {sum(r >= 3 for r in paired)}/{len(seeds)}, "
            f"median {statistics.median(paired):.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--settings", default="random/sha,gp/none,gp/sha,tpe/sha,tpe/hyperband")
    parser.add_argument("--trial-epochs", type=int, default=20)
    parser.add_argument("--budget", type=int, default=1200, help="epochs per study")
    parser.add_argument(
        "--stop-at",
        type=int,
        help="stop the compared settings' studies (not random search's) after this many epochs: "
        "enough to decide '>= 3x' on every seed when at least a third of the budget, at a third "
        "of the cost; their final losses are then not measured",
    )
    parser.add_argument("--json", type=Path, help="write the raw histories here (accumulates)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    settings = [s for s in args.settings.split(",") if s]
    # --json accumulates: finished (setting, seed) studies are kept, so that a long comparison
    # runs as several bounded invocations
    histories: dict[str, dict[int, list[tuple[int, float]]]] = {}
    epochs_run: dict[str, dict[int, int]] = {}  # per study: the epochs it ran (its horizon)
    if args.json and args.json.exists():
        saved = json.loads(args.json.read_text())
        if saved.get("protocol") == [args.trial_epochs, args.budget]:
            histories = {
                k: {int(s): [tuple(p) for p in h] for s, h in v.items()}  # type: ignore[misc]
                for k, v in saved["histories"].items()
            }
            ran = saved.get("epochs_run", {})
            epochs_run = {
                k: {s: int(ran.get(k, {}).get(str(s), args.budget)) for s in v}
                for k, v in histories.items()
            }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = ls.default_config(
            "ae", dataset=str(digits_npz(root)), device="cpu", val_fraction=0.2
        )
        for setting in ["random/none", *settings]:
            done = histories.setdefault(setting, {})
            ran = epochs_run.setdefault(setting, {})
            horizon = args.budget
            if setting != "random/none" and args.stop_at:
                horizon = min(args.stop_at, args.budget)
            for seed in seeds:
                if seed in done and ran[seed] >= horizon:
                    continue
                start = time.perf_counter()
                done[seed] = run_setting(setting, seed, base, args.trial_epochs, horizon, root)
                ran[seed] = horizon
                best = min((v for _, v in done[seed]), default=float("nan"))
                print(
                    f"{setting:14s} seed {seed}: best {best:.3f} "
                    f"({len(done[seed])} completed, {time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                if args.json:
                    document = {
                        "protocol": [args.trial_epochs, args.budget],
                        "histories": histories,
                        "epochs_run": epochs_run,
                    }
                    args.json.write_text(json.dumps(document))
    report(histories, epochs_run, seeds, settings, args.trial_epochs, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
