"""The plain-words findings: the rules that turn an epoch record into warnings, and `detect`,
which runs them all. The thresholds and `Finding` live in `thresholds` (re-exported here), the
loss-curve rules in `loss_rules`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from latentspace.diagnostics.loss_rules import loss_warnings
from latentspace.diagnostics.measure import ACTIVE_UNIT_THRESHOLD
from latentspace.diagnostics.thresholds import (
    TOO_HIGH,
    UPSTREAM_OF_COLLAPSE,
    Finding,
    Thresholds,
)
from latentspace.diagnostics.thresholds import finite as _finite
from latentspace.diagnostics.thresholds import first_step as _first_step

__all__ = [
    "TOO_HIGH",
    "UPSTREAM_OF_COLLAPSE",
    "Finding",
    "Growth",
    "Thresholds",
    "detect",
    "exploded",
]


# the advised clipping norm over the first step's: above the growth of every healthy run in
# bench/diagnostics_accuracy.py (at most 43 times), far below a blow-up
_CLIP_OVER_START = 100


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _layer_warnings(entry: dict[str, Any], lr: float, t: Thresholds) -> list[Finding]:
    found = []
    layers: dict[str, dict[str, Any]] = entry.get("layers", {})
    images = entry.get("val_images", 0)
    unit = entry.get("val_unit", "images")  # what the validation batch holds, in words
    for name, stats in layers.items():
        dead = stats.get("dead_fraction")
        # on few images, a unit silent on all of them may just be rare; a layer with no unit
        # firing at all passes nothing for them, however few
        if dead is not None and dead >= t.dead_relu and (images >= t.dead_images or dead == 1):
            found.append(
                Finding(
                    f"dead_relu:{name}",
                    f"{_percent(dead)} of the ReLU units in {name} never fired on {images} "
                    f"validation {unit} (dead ReLU): lower the learning rate (now {lr:g}) or "
                    "try --activation leaky_relu",
                )
            )
        saturated = stats.get("saturated_fraction")
        if saturated is not None and saturated >= t.saturated:
            found.append(
                Finding(
                    f"saturated:{name}",
                    f"{_percent(saturated)} of the {stats['activation']} outputs in {name} are "
                    f"saturated (slope under 5% of its peak) on {images} validation {unit}, so "
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
    return found


def _crawl_warning(
    entry: dict[str, Any],
    history: Sequence[dict[str, Any]],
    found: Sequence[Finding],
    lr: float,
    t: Thresholds,
    base_lr: float | None,
) -> list[Finding]:
    """Steps too small to make progress. Not said when a schedule has lowered the rate below
    its start (small steps on purpose), nor in a run whose rate was found too high at any epoch:
    its weights have grown so large (or its units died) that a normal step looks small, and a
    higher rate is the opposite of the cure. Only for a model whose loss is a likelihood bound."""
    layers: dict[str, dict[str, Any]] = entry.get("layers", {})
    last = [s["update_ratio"] for s in layers.values() if s.get("update_ratio") is not None]
    if not last or max(last) >= t.update_low or not entry.get("likelihood", True):
        return []  # a GAN's players stop moving when one wins: that is no slow learning rate
    decayed = base_lr is not None and lr < base_lr
    too_high = {f.key for f in found} | {k for h in history for k in h.get("active", [])}
    if decayed or too_high & set(TOO_HIGH):
        return []
    return [
        Finding(
            "update_low",
            f"the last step's updates were at most {max(last):.2g} times the size of the "
            f"weights in every layer (update-to-weight ratio; about 1e-3 is typical): training "
            f"crawls, try a higher learning rate than {lr:g} (--lr {lr * 10:g})",
        )
    ]


def _gradient_warnings(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> list[Finding]:
    found = []
    ratio = entry.get("grad_ratio")
    # the ratio compares the first and the last layer of one network trained on one loss; a
    # GAN's first layer (the generator's) and last (the discriminator's) answer two losses
    if ratio is not None and ratio < t.vanishing and entry.get("likelihood", True):
        first, last = entry["first_layer"], entry["last_layer"]
        kinds = {s.get("activation") for s in entry.get("layers", {}).values()}
        hint = (
            "try --activation relu or leaky_relu"
            if kinds & {"sigmoid", "tanh"}
            else "try a shallower network"
        )
        found.append(
            Finding(
                "vanishing",
                f"the weight gradient of {first} is {ratio:.2g} times that of {last} "
                f"(vanishing gradients): {hint}",
            )
        )
    start = _first_step(entry, history)
    norms = [s["grad_norm"] for s in entry.get("steps_sampled", []) if _finite(s.get("grad_norm"))]
    if start and norms and start.get("grad_norm", 0) > 0:
        growth = max(norms) / start["grad_norm"]
        if growth > t.exploding:
            found.append(
                Finding(
                    "exploding",
                    f"the gradient norm reached {max(norms):.3g} in epoch {entry['epoch']}, "
                    f"{growth:.2g} times its {start['grad_norm']:.3g} at the first step "
                    f"(exploding gradients): clip gradients with --set train.grad_clip="
                    f"{_nice(_CLIP_OVER_START * start['grad_norm'])}",
                )
            )
    return found


def _nice(value: float) -> str:
    """One significant figure: a setting to type, not a measurement."""
    return f"{float(f'{value:.1g}'):g}"


@dataclasses.dataclass(frozen=True)
class Growth:
    """How far the gradient norm grew over the run's first step's: the evidence of exploding
    gradients that a run stopped by a NaN loss is told."""

    first: float  # the gradient norm at step 1
    peak: float  # the largest finite norm seen
    peak_step: int

    @property
    def clip(self) -> str:
        """The clipping norm to advise."""
        return _nice(_CLIP_OVER_START * self.first)

    def __str__(self) -> str:
        return (
            f"the gradient norm grew from {self.first:.3g} at step 1 to {self.peak:.3g} at step "
            f"{self.peak_step}, {self.peak / self.first:.2g} times"
        )


def exploded(norms: Sequence[tuple[int, float]], t: Thresholds) -> Growth | None:
    """The growth of the gradient norms `norms`, (step, norm) pairs in step order, when their
    largest finite one is above `t.exploding` times the first step's; None otherwise, or when
    step 1 is not among them (a resumed run: nothing to compare with)."""
    finite = [(step, norm) for step, norm in norms if _finite(norm)]
    if not finite or finite[0][0] != 1 or finite[0][1] <= 0:
        return None
    step, peak = max(finite, key=lambda pair: pair[1])
    return Growth(finite[0][1], peak, step) if peak > t.exploding * finite[0][1] else None


def _code_warnings(entry: dict[str, Any], t: Thresholds) -> list[Finding]:
    """Posterior collapse: (almost) no latent unit's posterior mean varies across images, so the
    decoder ignores the code. Counted as `evaluate` counts active units (measure.py)."""
    if (entry.get("step") or 0) < t.collapse_steps:
        return []  # a VAE's code is often inactive for its first tens of steps, then wakes up
    for stats in entry.get("layers", {}).values():
        active, dims = stats.get("active_units"), stats.get("latent_dim")
        if active is None or not dims or active / dims > t.collapse:
            continue
        kl = entry.get("val_kl")
        # the family's own remedies where it declares them (GenerativeModel.collapse_advice)
        advice = entry.get("collapse_advice") or (
            "lower model.beta or warm the KL term up with --set model.kl_warmup_epochs=10"
        )
        return [
            Finding(
                "posterior_collapse",
                f"only {active} of {dims} latent units are active (Cov_x E_q[z] > "
                f"{ACTIVE_UNIT_THRESHOLD:g} on {entry.get('val_images', 0)} validation "
                f"{entry.get('val_unit', 'images')}"
                + (f"; KL {kl:.2f} nats each" if kl is not None else "")
                + f"): posterior collapse, the decoder ignores the code; {advice}",
            )
        ]
    return []


def _adversarial_warnings(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> list[Finding]:
    """Two players: the discriminator has won outright, or the generator collapses. Judged on
    the "signals" a family declares (`training_signals`: what its terms measure, and for the
    discriminator's loss the value under which it has won, which depends on the loss)."""
    signals = entry.get("signals") or {}
    found = []
    loss, limit = signals.get("discriminator_loss"), signals.get("discriminator_won_below")
    if _finite(loss) and _finite(limit) and loss < limit:
        found.append(
            Finding(
                "d_wins",
                f"the discriminator wins outright: its loss averaged {loss:.3g} in epoch "
                f"{entry['epoch']}, under {limit:.2g}, the loss of a discriminator 99% sure of "
                "every image, so the generator learns little from it; lower model.lr_d or raise "
                "model.lr_g",
            )
        )
    # healthy generators dip for an epoch or two early on, collapsing ones stay down
    epochs = max(1, t.diversity_epochs)
    recent = [entry, *reversed(history)][:epochs]
    spread = [(h.get("signals") or {}).get("sample_diversity") for h in recent]
    if len(spread) == epochs and all(_finite(d) and d < t.diversity for d in spread):
        found.append(
            Finding(
                "mode_collapse",
                f"the generator may be collapsing: its samples differ from each other only "
                f"{spread[0]:.2f} times as much as real images do (1.0 = as varied as the data; "
                f"under {t.diversity:g} for {epochs} epoch{'s' if epochs > 1 else ''} in a row): "
                "check `latentspace quality` for the classes it covers; lower model.lr_g or "
                "raise model.lr_d",
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
    """Every condition true for the diagnostics record `entry`, given the earlier records (with
    their "active" keys). `base_lr` is the configured learning rate; `lr` the one the epoch used
    (after a schedule)."""
    t = thresholds or Thresholds()
    found = [
        *_layer_warnings(entry, lr, t),
        *_gradient_warnings(entry, history, t),
        *loss_warnings(entry, history, lr, t),
        *_adversarial_warnings(entry, history, t),
    ]
    found += _crawl_warning(entry, history, found, lr, t, base_lr)
    # an encoder that gets no useful gradient (a rate far off, vanishing gradients) learns no
    # code either; the collapse advice (the KL weight) is for a model that trains otherwise well
    if not {f.key for f in found} & set(UPSTREAM_OF_COLLAPSE):
        found += _code_warnings(entry, t)
    return found
