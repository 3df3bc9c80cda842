"""Tuning efficiency: training epochs needed to reach a target validation loss, against plain
random search without pruning, same space, same epoch budget, several seeds.

Protocol (issue 6): an MLP autoencoder on scikit-learn's digits (8x8), the default search space
with a fixed number of epochs per trial. Each setting (sampler/pruner) runs one study per seed
through latentspace's own trial objective (every trial a real run) until the studies' epochs sum
to the budget. The target is the median over seeds of random search's final best; a setting's
cost on a seed is the epochs spent when a completed trial first reached the target. The ratio is
random search's cost over the setting's; where random search never reached the target on a seed,
its cost is the budget and the ratio is a lower bound (marked >=).

    nice -n 5 .venv/bin/python bench/tune_efficiency.py --seeds 10 --settings gp/none,tpe/none
"""

from __future__ import annotations

import argparse
import json
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
    """One study; returns (epochs spent so far, value) after each completed trial."""
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
        spent = 0
        while spent < budget:
            trial = run_trial(study, storage, objective, options)
            spent += int(trial.user_attrs.get("epochs", 0)) or 1  # a failed trial costs >= 1
            if trial.state == optuna.trial.TrialState.COMPLETE:
                history.append((spent, float(trial.value)))
    return history


def epochs_to_reach(history: list[tuple[int, float]], target: float) -> int | None:
    for spent, value in history:
        if value <= target:
            return spent
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--settings", default="gp/none,tpe/none,tpe/median,random/sha,tpe/hyperband"
    )
    parser.add_argument("--trial-epochs", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300, help="epochs per study")
    parser.add_argument("--json", type=Path, help="write the raw histories here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    settings = [s for s in args.settings.split(",") if s]
    # --json accumulates: finished (setting, seed) studies are kept, so that a long comparison
    # runs as several bounded invocations
    histories: dict[str, dict[int, list[tuple[int, float]]]] = {}
    if args.json and args.json.exists():
        saved = json.loads(args.json.read_text())
        if saved.get("protocol") == [args.trial_epochs, args.budget]:
            histories = {
                k: {int(s): [tuple(p) for p in h] for s, h in v.items()}  # type: ignore[misc]
                for k, v in saved["histories"].items()
            }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = ls.default_config(
            "ae", dataset=str(digits_npz(root)), device="cpu", val_fraction=0.2
        )
        for setting in ["random/none", *settings]:
            done = histories.setdefault(setting, {})
            for seed in seeds:
                if seed in done:
                    continue
                start = time.perf_counter()
                done[seed] = run_setting(setting, seed, base, args.trial_epochs, args.budget, root)
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
                    }
                    args.json.write_text(json.dumps(document))
    finals = [min(v for _, v in histories["random/none"][s]) for s in seeds]
    target = statistics.median(finals)
    print(
        f"\ntarget: {target:.4f} (median over seeds of random search's best after {args.budget} epochs)"
    )
    print(f"budget {args.budget} epochs per study, {args.trial_epochs}-epoch trials, seeds {seeds}")

    def median_cost(setting: str) -> float:
        """Median over seeds of the epochs to reach the target; not reached counts as the
        budget (a censored value: the median is then a lower bound)."""
        costs = [epochs_to_reach(histories[setting][s], target) or args.budget for s in seeds]
        return float(statistics.median(costs))

    random_cost = median_cost("random/none")
    print(f"random/none    median epochs to the target {random_cost:.0f}")
    for setting in settings:
        print(
            f"{setting:14s} median epochs to the target {median_cost(setting):.0f}: "
            f"{random_cost / median_cost(setting):.2f}x random search's"
        )
    for setting in settings:
        ratios: list[float] = []
        cells = []
        for seed in seeds:
            base_cost = epochs_to_reach(histories["random/none"][seed], target)
            cost = epochs_to_reach(histories[setting][seed], target)
            bound = base_cost is None
            base_cost = base_cost or args.budget
            if cost is None:
                ratio = 0.0
                cells.append("not reached")
            else:
                ratio = base_cost / cost
                cells.append(f"{'>=' if bound else ''}{ratio:.2f}")
            ratios.append(ratio)
        finals_s = [min((v for _, v in histories[setting][s]), default=float("nan")) for s in seeds]
        hits = sum(r >= 3 for r in ratios)
        print(
            f"{setting:14s} median ratio {statistics.median(ratios):.2f}  >=3x in {hits}/{len(seeds)}  "
            f"median best {statistics.median(finals_s):.4f}  per seed: {' '.join(cells)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
