"""Training diagnostics: what happens inside the network, measured cheaply and said in plain words.

A `Diagnostics` callback (on by default in `latentspace.train`) measures, per weighted layer
(Linear / Conv / ConvTranspose, named "encoder layer 1", "decoder layer 3", ...):

- the gradient norm of its weight on sampled steps (after clipping, as the optimizer saw it),
- the norms of its weight and bias at the end of each epoch,
- the update-to-weight ratio ||w_after - w_before|| / ||w_before|| of a sampled step (the last
  step of every epoch, and every `every` steps), from a copy of the weights taken just before that
  step only,
- the fraction of its ReLU units that never fire on a fixed validation batch (dead ReLU), and the
  fraction of its Sigmoid/Tanh outputs in saturation (slope below 5% of its peak),

and, per epoch, the first-to-last-layer gradient ratio, the train/validation gap and whether
validation loss has turned upward. Forward hooks are attached only for the one validation pass at
the end of an epoch; nothing runs on unsampled steps. The callback uses no random numbers: the
validation batch is the first `val_images` validation images and the pass is the model's
`validation_step` on a fixed seed inside `torch.random.fork_rng`, so the training run's random
stream is untouched and a resumed run still equals an uninterrupted one.

Each epoch appends one JSON object to `diagnostics.jsonl` in the run (the file is rewritten
atomically). A warning is raised the first time its condition becomes true in a run (each
record's "active" list says which conditions hold at that epoch), logged like the trainer's epoch
lines and added to the epoch record's "warnings"; each names the measured number and one
suggestion. Thresholds: `Thresholds` below, explained in docs/diagnostics.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from latentspace import runs
from latentspace.data import to_float
from latentspace.errors import RunError

if TYPE_CHECKING:
    from latentspace.train import Trainer

__all__ = [
    "DIAGNOSTICS",
    "Diagnostics",
    "Finding",
    "Thresholds",
    "detect",
    "diagnostics_figures",
    "find_layers",
    "measure_activations",
    "read_diagnostics",
    "summarize",
]

DIAGNOSTICS = "diagnostics.jsonl"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a measured number becomes a warning. docs/diagnostics.md gives the reasons."""

    dead_relu: float = 0.6  # fraction of a layer's ReLU units silent on every validation image
    saturated: float = 0.5  # fraction of a layer's sigmoid/tanh outputs with slope < 5% of peak
    vanishing: float = 1e-3  # first-layer / last-layer weight-gradient norm below this
    exploding: float = 1e3  # ... above this
    update_high: float = 0.25  # largest update-to-weight ratio of the epoch's sampled steps
    update_low: float = 5e-4  # ... of the epoch's last step below this in every layer
    loss_spike: float = 3.0  # epoch's mean training loss over its end-of-epoch loss above this
    loss_rise: float = 0.05  # training loss rose by more than this fraction over one epoch
    upturn: float = 0.01  # validation loss above its best by this fraction while training falls
    gap: float = 0.25  # (validation - training) / training loss above this


# slope below 5% of its peak: sigmoid y(1-y) < 0.25 * 0.05; tanh 1 - y^2 < 0.05
_SIGMOID_EDGE = 0.5 - math.sqrt(0.25 - 0.25 * 0.05)
_TANH_EDGE = math.sqrt(1.0 - 0.05)


@dataclasses.dataclass(frozen=True)
class Finding:
    """key identifies the condition (e.g. "dead_relu:encoder layer 2"); text is what users read."""

    key: str
    text: str


@dataclasses.dataclass
class Layer:
    """A weighted layer and the activations that follow it (until the next weighted layer)."""

    name: str
    weight: nn.Parameter
    bias: nn.Parameter | None
    activations: list[nn.Module] = dataclasses.field(default_factory=list)


def find_layers(model: nn.Module) -> list[Layer]:
    """Trained weighted layers (a module with a weight matrix or kernel that requires gradients)
    in forward-definition order,
    named "<top-level module> layer k" (1-based within it), each with its following activations."""
    layers: list[Layer] = []
    counts: dict[str, int] = {}
    for qualname, module in model.named_modules():
        weight = getattr(module, "weight", None)
        # frozen weights (a GAN's moving-average generator) get no gradients to watch
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2 and weight.requires_grad:
            group = qualname.split(".")[0] if "." in qualname else ""
            counts[group] = counts.get(group, 0) + 1
            bias = getattr(module, "bias", None)
            layers.append(
                Layer(
                    f"{group} layer {counts[group]}".strip(),
                    weight,
                    bias if isinstance(bias, nn.Parameter) else None,
                )
            )
        elif isinstance(module, nn.ReLU | nn.Sigmoid | nn.Tanh) and layers:
            layers[-1].activations.append(module)
    return layers


def _activation_name(module: nn.Module) -> str:
    return {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}[type(module)]


@torch.no_grad()
def measure_activations(
    model: nn.Module, layers: Sequence[Layer], x: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """Run the model's `validation_step(x)` with hooks on the watched activations.

    Returns {layer name: {"activation", "dead_fraction" (ReLU: units that are zero for every
    image; a conv unit is a channel), "saturated_fraction" (sigmoid/tanh outputs)}}."""
    results: dict[str, dict[str, Any]] = {}
    handles = []

    def hook_for(name: str, kind: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
            if kind == "relu":
                fired = (out > 0).flatten(2).any(2) if out.dim() > 2 else out > 0
                dead = 1.0 - fired.any(0).float().mean().item()
                results[name] = {"activation": kind, "dead_fraction": dead}
            else:
                if kind == "sigmoid":
                    edge = (out < _SIGMOID_EDGE) | (out > 1 - _SIGMOID_EDGE)
                else:
                    edge = out.abs() > _TANH_EDGE
                results[name] = {
                    "activation": kind,
                    "saturated_fraction": edge.float().mean().item(),
                }

        return hook

    for layer in layers:
        for module in layer.activations[:1]:
            handles.append(
                module.register_forward_hook(hook_for(layer.name, _activation_name(module)))
            )
    kind = x.device.type
    devices = [x.device.index or 0] if kind != "cpu" else []
    was_training = model.training
    try:
        # the model's own validation step, on a fixed seed inside a forked RNG: the same draws
        # every epoch, and the training run's random stream is left exactly as it was
        with torch.random.fork_rng(devices=devices, device_type=kind if devices else "cuda"):
            torch.manual_seed(0)
            model.eval()
            validation_step = getattr(model, "validation_step", None)
            if validation_step is not None:
                validation_step(x)
            else:
                model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return results


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _layer_warnings(
    entry: dict[str, Any], lr: float, t: Thresholds, base_lr: float | None = None
) -> list[Finding]:
    found = []
    layers: dict[str, dict[str, Any]] = entry.get("layers", {})
    images = entry.get("val_images", 0)
    for name, stats in layers.items():
        dead = stats.get("dead_fraction")
        if dead is not None and dead >= t.dead_relu:
            found.append(
                Finding(
                    f"dead_relu:{name}",
                    f"{_percent(dead)} of the ReLU units in {name} never fired on {images} "
                    f"validation images (dead ReLU): lower the learning rate (now {lr:g}) or "
                    "try --activation leaky_relu",
                )
            )
        saturated = stats.get("saturated_fraction")
        if saturated is not None and saturated >= t.saturated:
            found.append(
                Finding(
                    f"saturated:{name}",
                    f"{_percent(saturated)} of the {stats['activation']} outputs in {name} are "
                    f"saturated (slope under 5% of its peak) on {images} validation images, so "
                    "little gradient passes through them: try --activation relu",
                )
            )
    largest = {n: s["update_ratio_max"] for n, s in layers.items() if s.get("update_ratio_max")}
    if largest:
        worst = max(largest, key=lambda n: largest[n])
        if largest[worst] > t.update_high:
            found.append(
                Finding(
                    "update_high",
                    f"one step's update to {worst} was {largest[worst]:.2g} times the size of its "
                    f"weights (update-to-weight ratio; about 1e-3 is typical): the learning rate "
                    f"{lr:g} is probably too high, try --lr {lr / 10:g}",
                )
            )
    last = [s["update_ratio"] for s in layers.values() if s.get("update_ratio") is not None]
    # a schedule that has lowered the rate below its start makes small steps on purpose
    decayed = base_lr is not None and lr < base_lr
    if last and max(last) < t.update_low and not decayed:
        found.append(
            Finding(
                "update_low",
                f"the last step's updates were at most {max(last):.2g} times the size of the "
                f"weights in every layer (update-to-weight ratio; about 1e-3 is typical): "
                f"training crawls, "
                f"try a higher learning rate than {lr:g} (--lr {lr * 10:g})",
            )
        )
    return found


def _gradient_warnings(entry: dict[str, Any], t: Thresholds) -> list[Finding]:
    ratio = entry.get("grad_ratio")
    if ratio is None:
        return []
    first, last = entry["first_layer"], entry["last_layer"]
    what = f"the weight gradient of {first} is {ratio:.2g} times that of {last}"
    kinds = {s.get("activation") for s in entry.get("layers", {}).values()}
    if ratio < t.vanishing:
        hint = (
            "try --activation relu or leaky_relu"
            if kinds & {"sigmoid", "tanh"}
            else "try a shallower network"
        )
        return [Finding("vanishing", f"{what} (vanishing gradients): {hint}")]
    if ratio > t.exploding:
        return [
            Finding(
                "exploding",
                f"{what} (exploding gradients): clip gradients with --set train.grad_clip=10",
            )
        ]
    return []


def _loss_warnings(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], lr: float, t: Thresholds
) -> list[Finding]:
    found: list[Finding] = []
    if not entry.get("likelihood", True):
        return found
    train_loss = entry.get("train_loss")
    end = entry.get("val_loss", entry.get("end_loss"))
    if train_loss is not None and end is not None and end > 0 and train_loss > t.loss_spike * end:
        found.append(
            Finding(
                "loss_spike",
                f"training loss averaged {train_loss:.4g} in epoch {entry['epoch']}, "
                f"{train_loss / end:.3g} times its value at the end of the epoch ({end:.4g}): "
                f"the loss blew up during the epoch; the learning rate {lr:g} is too high, "
                f"try --lr {lr / 10:g}",
            )
        )
    if history and train_loss is not None:
        before = history[-1].get("train_loss")
        if (
            before is not None
            and math.isfinite(before)
            and train_loss > before + t.loss_rise * abs(before)
        ):
            found.append(
                Finding(
                    "loss_rise",
                    f"training loss rose from {before:.4g} to {train_loss:.4g} "
                    f"({(train_loss - before) / abs(before):+.0%}) in epoch {entry['epoch']}: the "
                    f"learning rate {lr:g} may be too high, try --lr {lr / 10:g}",
                )
            )
    if entry.get("val_upturn"):
        found.append(
            Finding(
                "overfitting",
                f"validation loss rose to {entry['val_loss']:.4g}, "
                f"{entry['val_loss'] / entry['val_best'] - 1:.1%} above its best "
                f"({entry['val_best']:.4g} at epoch {entry['val_best_epoch']}), while training "
                f"loss fell to {train_loss:.4g} (overfitting): stop early with "
                "--set train.patience=3",
            )
        )
    gap = entry.get("gap_relative")
    unstable = any(f.key in ("loss_spike", "loss_rise") for f in found)
    if gap is not None and gap > t.gap and not unstable:  # a gap from instability is not memory
        found.append(
            Finding(
                "gap",
                f"validation loss {entry['val_loss']:.4g} is {gap:.0%} above training loss "
                f"{train_loss:.4g} (train/validation gap): the model memorises its training "
                "images; train on more images (--set data.limit=...) or a smaller model",
            )
        )
    return found


def detect(
    entry: dict[str, Any],
    history: Sequence[dict[str, Any]],
    lr: float,
    thresholds: Thresholds | None = None,
    base_lr: float | None = None,
) -> list[Finding]:
    """Every condition true for the diagnostics record `entry`, given the earlier records.
    `base_lr` is the configured learning rate; `lr` the one the epoch used (after a schedule)."""
    t = thresholds or Thresholds()
    return [
        *_layer_warnings(entry, lr, t, base_lr),
        *_gradient_warnings(entry, t),
        *_loss_warnings(entry, history, lr, t),
    ]


def _loss_entry(
    record: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> dict[str, Any]:
    """Train/validation numbers of an epoch record, with the gap and the upturn flag. The
    training loss excludes the L1/L2 penalties (validation has none). Only for models whose loss
    is a likelihood bound (it has a "reconstruction" term): a GAN's two losses pull against each
    other, so their sum rising or a gap says nothing about overfitting."""
    train = record["train"]
    out: dict[str, Any] = {
        "train_loss": train["total"] - train.get("l1", 0.0) - train.get("l2", 0.0),
        "likelihood": "reconstruction" in train,
    }
    if "val" not in record or not out["likelihood"]:
        return out
    val, train_loss = record["val"]["total"], out["train_loss"]
    out["val_loss"] = val
    out["gap"] = val - train_loss
    out["gap_relative"] = (val - train_loss) / abs(train_loss) if train_loss else None
    earlier = [h for h in history if h.get("val_loss") is not None]
    if earlier:
        best = min(earlier, key=lambda h: h["val_loss"])
        out["val_best"], out["val_best_epoch"] = best["val_loss"], best["epoch"]
        out["val_upturn"] = bool(
            val > best["val_loss"] + t.upturn * abs(best["val_loss"])
            and train_loss < best["train_loss"]
        )
    return out


class Diagnostics:
    """The trainer callback. every: measure gradients and updates on one step in this many (and
    on the last step of each epoch); val_images: size of the fixed validation batch."""

    def __init__(
        self, every: int = 50, val_images: int = 512, thresholds: Thresholds | None = None
    ) -> None:
        if every < 1 or val_images < 1:
            raise ValueError("Diagnostics: every and val_images must be at least 1")
        self.every = every
        self.val_images = val_images
        self.thresholds = thresholds or Thresholds()
        self.records: list[dict[str, Any]] = []
        self.said: set[str] = set()  # conditions already warned about in this run
        self.layers: list[Layer] = []
        self.steps = 1
        self.step = 0
        self.epoch = 0
        self.samples: list[dict[str, Any]] = []
        self.snapshot: list[torch.Tensor] | None = None
        self.batch: torch.Tensor | None = None
        self.seconds = 0.0

    # ---- trainer hooks ----------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer) -> None:
        start = time.perf_counter()
        self.layers = find_layers(trainer.model)
        self.records = [r for r in read_diagnostics(trainer.run_dir) if r["epoch"] <= trainer.epoch]
        self.said = {key for r in self.records for key in r.get("raised", [])}
        source = (
            trainer.val_set.images if trainer.val_set is not None else trainer.train_batches.images
        )
        self.batch = to_float(source[: self.val_images]).to(
            trainer.device
        )  # first N: no randomness
        self.steps = max(1, len(trainer.train_batches))
        self.step, self.epoch = 0, trainer.epoch
        self._prepare(0)
        self.seconds = time.perf_counter() - start

    def on_batch_end(
        self, trainer: Trainer, x: torch.Tensor, terms: dict[str, torch.Tensor]
    ) -> None:
        if (
            self.snapshot is None
            and self.step + 1 < self.steps
            and not self._sampled(self.step + 1)
        ):
            self.step += 1  # the common case: nothing to do
            return
        start = time.perf_counter()
        if self.snapshot is not None:
            self._measure_step(trainer, terms)
        self.step += 1
        self._prepare(self.step if self.step < self.steps else 0)
        self.seconds += time.perf_counter() - start

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        start = time.perf_counter()
        entry = self._epoch_entry(trainer, record)
        found = detect(
            entry,
            self.records,
            float(record["lr"]),
            self.thresholds,
            base_lr=trainer.train_config.lr,
        )
        raised = [w for w in found if w.key not in self.said]
        self.said.update(w.key for w in raised)
        new = [w.text for w in raised]
        entry["warnings"], entry["raised"] = new, [w.key for w in raised]
        entry["active"] = sorted(w.key for w in found)
        self.seconds += time.perf_counter() - start
        entry["seconds"] = round(self.seconds, 4)
        self.records.append(entry)
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        runs.atomic_write(trainer.run_dir / DIAGNOSTICS, lambda tmp: tmp.write_text(text))
        if new:
            record.setdefault("warnings", []).extend(new)
            runs.write_metrics(trainer.run_dir, trainer.records)
            if not trainer.quiet:
                for line in new:
                    trainer.log(f"  warning: {line}")
        self.samples, self.step, self.seconds = [], 0, 0.0
        self.epoch = trainer.epoch

    # ---- measuring --------------------------------------------------------------------------
    def _sampled(self, step: int) -> bool:
        """Every `every`-th step and the last of each epoch; in the run's first epoch also steps
        1, 2, 4, 8, ... (a learning rate that is too high shows in the first steps)."""
        n = step + 1
        early = self.epoch == 0 and n < self.every and n & (n - 1) == 0
        return early or n % self.every == 0 or step == self.steps - 1

    def _prepare(self, next_step: int) -> None:
        """Copy the weights when the next step is a sampled one (its update is measured)."""
        if self._sampled(next_step):
            self.snapshot = [layer.weight.detach().clone() for layer in self.layers]
        else:
            self.snapshot = None

    @torch.no_grad()
    def _measure_step(self, trainer: Trainer, terms: dict[str, torch.Tensor]) -> None:
        assert self.snapshot is not None
        grads, updates = [], []
        for layer, before in zip(self.layers, self.snapshot, strict=True):
            grad = layer.weight.grad
            grads.append(grad.norm() if grad is not None else torch.zeros((), device=before.device))
            updates.append((layer.weight - before).norm() / before.norm().clamp_min(1e-12))
        values = torch.stack(grads + updates).tolist() if grads else []
        n = len(self.layers)
        self.samples.append(
            {
                "step": trainer.epoch * self.steps + self.step + 1,
                "loss": float(terms["total"]),
                "grad_norm": values[:n],
                "update_ratio": values[n:],
            }
        )

    def _epoch_entry(self, trainer: Trainer, record: dict[str, Any]) -> dict[str, Any]:
        assert self.batch is not None
        activations = measure_activations(trainer.model, self.layers, self.batch)
        last = self.samples[-1] if self.samples else None
        layers: dict[str, dict[str, Any]] = {}
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                stats: dict[str, Any] = {
                    "weight_norm": layer.weight.norm().item(),
                    "bias_norm": layer.bias.norm().item() if layer.bias is not None else None,
                    "grad_norm": last["grad_norm"][i] if last else None,
                    "grad_norm_mean": (
                        sum(s["grad_norm"][i] for s in self.samples) / len(self.samples)
                        if self.samples
                        else None
                    ),
                    "update_ratio": last["update_ratio"][i] if last else None,
                    "update_ratio_max": (
                        max(s["update_ratio"][i] for s in self.samples) if self.samples else None
                    ),
                }
                stats.update(activations.get(layer.name, {}))
                layers[layer.name] = stats
        entry: dict[str, Any] = {
            "epoch": record["epoch"],
            "step": last["step"] if last else None,
            "val_images": len(self.batch),
            "layers": layers,
            "steps_sampled": [
                {
                    "step": s["step"],
                    "loss": s["loss"],
                    "grad_norm": math.sqrt(sum(g * g for g in s["grad_norm"])),
                }
                for s in self.samples
            ],
        }
        if last:
            entry["end_loss"] = last["loss"]
        if last and len(self.layers) >= 2:
            first_grad, last_grad = last["grad_norm"][0], last["grad_norm"][-1]
            entry["first_layer"], entry["last_layer"] = self.layers[0].name, self.layers[-1].name
            entry["grad_ratio"] = first_grad / last_grad if last_grad > 0 else None
        entry.update(_loss_entry(record, self.records, self.thresholds))
        return entry


# ---- reading a finished run ------------------------------------------------------------------
def read_diagnostics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of `diagnostics.jsonl` ([] when the run has none)."""
    return runs.read_jsonl(Path(run_dir) / DIAGNOSTICS)


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
