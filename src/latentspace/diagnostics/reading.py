"""Reading a finished run's diagnostics: the records, a text summary, the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentspace import runs
from latentspace.errors import RunError

DIAGNOSTICS = "diagnostics.jsonl"


def read_diagnostics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of `diagnostics.jsonl` ([] when the run has none). A truncated last line (a
    killed writer) is dropped with a warning; a damaged record is a one-line RunError."""
    return runs.read_jsonl(Path(run_dir) / DIAGNOSTICS, _problem)


def _problem(record: dict[str, Any]) -> str | None:
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return "lacks a whole-number 'epoch'"
    if not isinstance(record.get("layers"), dict):
        return "lacks 'layers' (an object of per-layer measurements)"
    return None


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def summarize(run_dir: str | Path) -> str:
    """A plain-text summary of a run's diagnostics: epochs, the last epoch's layers, warnings."""
    run_dir = Path(run_dir)
    records = read_diagnostics(run_dir)
    if not records:
        if not (run_dir / runs.CONFIG).exists():
            raise RunError(f"{run_dir} is not a latentspace run (no {runs.CONFIG})")
        raise RunError(
            f"{run_dir / DIAGNOSTICS} is missing: the run was trained with --no-diagnostics "
            "or before diagnostics existed"
        )
    lines = [f"diagnostics of {run_dir} ({len(records)} epochs)", ""]
    lines.append(
        f"{'epoch':>5}  {'train':>10}  {'val':>10}  {'gap':>7}  {'grad 1st/last':>13}  "
        f"{'max update':>10}  {'max dead':>8}  {'max sat.':>8}"
    )
    for r in records:
        layers = r["layers"].values()
        updates = [s["update_ratio"] for s in layers if s.get("update_ratio") is not None]
        dead = [s["dead_fraction"] for s in layers if "dead_fraction" in s]
        sat = [s["saturated_fraction"] for s in layers if "saturated_fraction" in s]
        lines.append(
            f"{r['epoch']:>5}  {_fmt(r.get('train_loss'), '.4g'):>10}  "
            f"{_fmt(r.get('val_loss'), '.4g'):>10}  {_fmt(r.get('gap_relative'), '+.1%'):>7}  "
            f"{_fmt(r.get('grad_ratio')):>13}  {_fmt(max(updates) if updates else None):>10}  "
            f"{_fmt(max(dead) if dead else None, '.0%'):>8}  "
            f"{_fmt(max(sat) if sat else None, '.0%'):>8}"
        )
    last = records[-1]
    lines += ["", f"layers at epoch {last['epoch']}:"]
    lines.append(
        f"  {'layer':<18} {'grad norm':>10} {'weight norm':>11} {'bias norm':>10} "
        f"{'update/weight':>13} {'activation':>10} {'dead':>6} {'saturated':>9}"
    )
    for name, s in last["layers"].items():
        lines.append(
            f"  {name:<18} {_fmt(s.get('grad_norm')):>10} {_fmt(s.get('weight_norm')):>11} "
            f"{_fmt(s.get('bias_norm')):>10} {_fmt(s.get('update_ratio')):>13} "
            f"{s.get('activation', '-'):>10} {_fmt(s.get('dead_fraction'), '.0%'):>6} "
            f"{_fmt(s.get('saturated_fraction'), '.0%'):>9}"
        )
    warnings = [(r["epoch"], w) for r in records for w in r.get("warnings", [])]
    lines += ["", "warnings:" if warnings else "warnings: none"]
    lines += [f"  epoch {epoch}: {text}" for epoch, text in warnings]
    if last.get("active"):
        lines.append(f"still true at the last epoch: {', '.join(last['active'])}")
    overhead = sum(r.get("seconds", 0.0) for r in records)
    lines.append(f"measuring took {overhead:.2f} s in all")
    return "\n".join(lines)


def _values(records: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if r.get(key) is None else float(r[key]) for r in records]


def diagnostics_figures(run_dir: str | Path, out_dir: str | Path) -> list[tuple[str, Path]]:
    """PNG plots of a run's diagnostics.jsonl: [(title, png path)] ([] when there is none)."""
    records = read_diagnostics(run_dir)
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in records]
    names = list(records[-1]["layers"])
    figures: list[tuple[str, Path]] = []

    def per_layer(key: str, title: str, ylabel: str, filename: str, log: bool = True) -> None:
        series = {
            n: [r["layers"].get(n, {}).get(key) for r in records]
            for n in names
            if any(r["layers"].get(n, {}).get(key) is not None for r in records)
        }
        if not series:
            return
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for n, values in series.items():
            ax.plot(epochs, [math.nan if v is None else v for v in values], marker=".", label=n)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=100)
        plt.close(fig)
        figures.append((title, out / filename))

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(epochs, _values(records, "train_loss"), marker=".", label="training")
    if any(r.get("val_loss") is not None for r in records):
        ax.plot(epochs, _values(records, "val_loss"), marker=".", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "diagnostics_loss.png", dpi=100)
    plt.close(fig)
    figures.append(("training and validation loss", out / "diagnostics_loss.png"))
    per_layer(
        "grad_norm",
        "gradient norm per layer (last step of each epoch)",
        "gradient norm",
        "diagnostics_grad.png",
    )
    per_layer(
        "update_ratio", "update-to-weight ratio per layer", "|Δw| / |w|", "diagnostics_update.png"
    )
    per_layer("weight_norm", "weight norm per layer", "weight norm", "diagnostics_weight.png")
    per_layer(
        "dead_fraction",
        "dead ReLU fraction per layer",
        "fraction never firing",
        "diagnostics_dead.png",
        log=False,
    )
    per_layer(
        "saturated_fraction",
        "saturated fraction per layer",
        "fraction saturated",
        "diagnostics_saturated.png",
        log=False,
    )
    return figures
