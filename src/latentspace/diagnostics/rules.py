"""The plain-words findings: thresholds and the rules that turn an epoch record into warnings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

from latentspace.diagnostics.measure import ACTIVE_UNIT_THRESHOLD

__all__ = [
    "TOO_HIGH",
    "UPSTREAM_OF_COLLAPSE",
    "Finding",
    "Growth",
    "Thresholds",
    "detect",
    "exploded",
]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a measured number becomes a warning. docs/diagnostics.md gives the reasons, and
    bench/diagnostics_accuracy.py the suite of labelled runs they were chosen on."""

    dead_relu: float = 0.9  # fraction of a layer's ReLU units silent on every validation image
    dead_images: int = 100  # ... judged only on at least this many images (on 24, chance)
    saturated: float = 0.5  # fraction of a layer's sigmoid/tanh outputs with slope < 5% of peak
    vanishing: float = 1e-3  # first-layer / last-layer weight-gradient norm below this
    exploding: float = 1e3  # a sampled step's gradient norm over the run's first step's above this
    update_high: float = 1.0  # largest update-to-weight ratio of the epoch's sampled steps
    update_low: float = 5e-4  # ... of the epoch's last step below this in every layer
    # epoch's mean training loss above its end-of-epoch loss by more than this many times the
    # distance from that end to the untrained model's (scale-free: a density's loss can be < 0)
    loss_spike: float = 1.0
    loss_rise: float = 0.05  # training loss rose by more than this fraction over one epoch
    upturn: float = 0.01  # validation loss above its best by this fraction while training falls
    upturn_epochs: int = 5  # ... in each of this many epochs in a row
    gap: float = 0.25  # (validation - training) / training loss above this
    collapse: float = 0.1  # share of active latent units at or below this: posterior collapse
    collapse_steps: int = 200  # ... after this many optimizer steps (units wake up in the first)
    diverged: float = 0.1  # loss above the untrained model's by more than this fraction
    diversity: float = 0.15  # generated images' spread over the real images' below this ...
    diversity_epochs: int = 2  # ... in each of this many epochs in a row: mode collapse


# the advised clipping norm over the first step's: above the growth of every healthy run in
# bench/diagnostics_accuracy.py (at most 43 times), far below a blow-up
_CLIP_OVER_START = 100

# conditions that say the learning rate is too high: a run that met one is never told to raise it
TOO_HIGH = ("update_high", "loss_spike", "loss_rise", "diverged")
UPSTREAM_OF_COLLAPSE = (*TOO_HIGH, "update_low", "vanishing", "exploding")


@dataclasses.dataclass(frozen=True)
class Finding:
    """key identifies the condition (e.g. "dead_relu:encoder layer 2"); text is what users read."""

    key: str
    text: str


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value)


def _layer_warnings(entry: dict[str, Any], lr: float, t: Thresholds) -> list[Finding]:
    found = []
    layers: dict[str, dict[str, Any]] = entry.get("layers", {})
    images = entry.get("val_images", 0)
    for name, stats in layers.items():
        dead = stats.get("dead_fraction")
        # on few images, a unit silent on all of them may just be rare; a layer with no unit
        # firing at all passes nothing for them, however few
        if dead is not None and dead >= t.dead_relu and (images >= t.dead_images or dead == 1):
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


def _first_step(entry: dict[str, Any], history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's first sampled step (step 1: the loss of the untrained model and its gradient
    norm), or None when the records do not reach back to it."""
    first = history[0] if history else entry
    steps = first.get("steps_sampled") or []
    if first.get("epoch") == 1 and steps and steps[0].get("step") == 1:
        return dict(steps[0])
    return None


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


def _epoch_start_loss(entry: dict[str, Any], history: Sequence[dict[str, Any]]) -> float | None:
    """The training loss where the epoch began: the previous epoch's last step, or the untrained
    model's at the run's first step."""
    if history:
        before = history[-1].get("end_loss")
        return before if _finite(before) else None
    start = _first_step(entry, history)
    return start["loss"] if start and _finite(start.get("loss")) else None


def _diverged(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> tuple[float, float] | None:
    """(the loss now, the untrained model's) when the loss is not finite or clearly above what
    the model scored before its first step (on one batch: hence the margin `t.diverged`):
    whatever it learned is lost. None otherwise.

    A family that anneals its KL weight declares it (signals["kl_weight"]): its first step
    weighed the KL by about 0 and validation weighs it by 1, and a KL that grows while its
    weight is low raises the validation loss above the untrained one with nothing lost. Then
    the validation loss less its KL (the reconstruction, weighed 1 at every step) is compared:
    the untrained reconstruction is at most the first step's loss (a KL term is never below 0),
    so one clearly above that loss is still a model that lost what it learned."""
    start = _first_step(entry, history)
    now = entry.get("val_loss", entry.get("train_loss"))
    if start is None or now is None or not _finite(start.get("loss")):
        return None
    annealing = "kl_weight" in (entry.get("signals") or {})
    if annealing and _finite(now) and _finite(entry.get("val_kl")) and "val_loss" in entry:
        now -= entry["val_kl"]
    above = now > start["loss"] + t.diverged * abs(start["loss"])
    return (now, start["loss"]) if not _finite(now) or above else None


def _spike(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> tuple[float, float, float, float] | None:
    """(the epoch's mean training loss, its end-of-epoch loss, the untrained model's, how far the
    mean lay above that end in units of the distance between the two) when that is above
    `t.loss_spike`: for an end below the untrained loss, the share of the run's progress the
    epoch gave back. Measured against the run's own progress, not as a ratio of losses, since a
    density's loss can be near 0 or below it. A loss that only fell can average far above its
    end (a Gaussian decoder's first steps): it blew up only if the epoch's mean is also above
    where the epoch began. None otherwise, or when the records do not reach back to step 1."""
    mean, end = entry.get("train_loss"), entry.get("val_loss", entry.get("end_loss"))
    first = _first_step(entry, history)
    begun = _epoch_start_loss(entry, history)
    if first is None or not (_finite(mean) and _finite(end) and _finite(first.get("loss"))):
        return None
    untrained = first["loss"]
    if (begun is not None and mean <= begun) or mean - end <= t.loss_spike * abs(untrained - end):
        return None
    distance = abs(untrained - end)
    return mean, end, untrained, (mean - end) / distance if distance else math.inf


def _loss_warnings(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], lr: float, t: Thresholds
) -> list[Finding]:
    found: list[Finding] = []
    if not entry.get("likelihood", True):
        return found
    train_loss = entry.get("train_loss")
    spike = _spike(entry, history, t)
    if spike is not None:
        mean, end, untrained, given_back = spike
        scale = "all it had fallen from" if end < untrained else "as far as it ended above"
        found.append(
            Finding(
                "loss_spike",
                f"training loss averaged {mean:.4g} in epoch {entry['epoch']}, {mean - end:.4g} "
                f"above its value at the end of the epoch ({end:.4g}), {given_back:.3g} times "
                f"{scale} the untrained model's {untrained:.4g}: the loss blew up during the "
                f"epoch; the learning rate {lr:g} is too high, try --lr {lr / 10:g}",
            )
        )
    if history and train_loss is not None:
        before = history[-1].get("train_loss")
        if _finite(before) and train_loss > before + t.loss_rise * abs(before):
            found.append(
                Finding(
                    "loss_rise",
                    f"training loss rose from {before:.4g} to {train_loss:.4g} "
                    f"({(train_loss - before) / abs(before):+.0%}) in epoch {entry['epoch']}: the "
                    f"learning rate {lr:g} may be too high, try --lr {lr / 10:g}",
                )
            )
    diverged = _diverged(entry, history, t)
    if diverged is not None:
        now, start = diverged
        found.append(
            Finding(
                "diverged",
                f"the loss is {now:.4g}, above the untrained model's {start:.4g} at the first "
                f"step: training diverged and what it learned is lost; the learning rate {lr:g} "
                f"is too high, try --lr {lr / 10:g}",
            )
        )
        return found  # a model that lost what it learned neither memorises nor overfits
    if entry.get("val_upturn"):
        found.append(_overfitting(entry, history, t))
    gap = entry.get("gap_relative")
    unstable = any(f.key in ("loss_spike", "loss_rise") for f in found)
    if _finite(gap) and gap > t.gap and not unstable:  # a gap from instability is not memory
        found.append(
            Finding(
                "gap",
                f"validation loss {entry['val_loss']:.4g} is {gap:.0%} above training loss "
                f"{train_loss:.4g} (train/validation gap): the model memorises its training "
                "images; train on more images (--set data.limit=...) or a smaller model",
            )
        )
    return found


def _longest_wait(values: Sequence[float]) -> int:
    """The most epochs a validation curve waited for a new best that then came."""
    best, waited, longest = math.inf, 0, 0
    for value in values:
        if value < best:
            best, longest, waited = value, max(longest, waited), 0
        else:
            waited += 1
    return longest


def _overfitting(
    entry: dict[str, Any], history: Sequence[dict[str, Any]], t: Thresholds
) -> Finding:
    """The advice's patience is longer than any wait this run's validation loss has already come
    back from: a shorter one would have stopped it before a later best."""
    curve = [h["val_loss"] for h in history if _finite(h.get("val_loss"))]
    patience = max(t.upturn_epochs, _longest_wait(curve) + 1)
    since = entry["epoch"] - entry["val_best_epoch"]
    return Finding(
        "overfitting",
        f"validation loss has stayed above its best ({entry['val_best']:.4g} at epoch "
        f"{entry['val_best_epoch']}) for {since} epochs and is now {entry['val_loss']:.4g}, "
        f"{entry['val_loss'] / entry['val_best'] - 1:.1%} above it, while training loss fell to "
        f"{entry['train_loss']:.4g} (overfitting): stop early with --set train.patience="
        f"{patience}, or train on more images",
    )


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
        *_loss_warnings(entry, history, lr, t),
        *_adversarial_warnings(entry, history, t),
    ]
    found += _crawl_warning(entry, history, found, lr, t, base_lr)
    # an encoder that gets no useful gradient (a rate far off, vanishing gradients) learns no
    # code either; the collapse advice (the KL weight) is for a model that trains otherwise well
    if not {f.key for f in found} & set(UPSTREAM_OF_COLLAPSE):
        found += _code_warnings(entry, t)
    return found
