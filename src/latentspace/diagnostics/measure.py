"""Finding a model's weighted layers and measuring its activations on a validation batch; the
active-unit measure of a latent code (one threshold, used by diagnostics and `evaluate`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "Layer",
    "active_units",
    "find_layers",
    "measure_activations",
    "posterior_mean_variance",
]

# slope below 5% of its peak: sigmoid y(1-y) < 0.25 * 0.05; tanh 1 - y^2 < 0.05
_SIGMOID_EDGE = 0.5 - math.sqrt(0.25 - 0.25 * 0.05)
_TANH_EDGE = math.sqrt(1.0 - 0.05)
# A latent unit is active when its posterior mean varies across images: Cov_x(E_q[z_u | x]) above
# this (Burda et al. 2016, section 5.2). diagnostics, `evaluate` and the report all count with it.
ACTIVE_UNIT_THRESHOLD = 0.01


@dataclasses.dataclass
class Layer:
    """A weighted layer and the activations that follow it (until the next weighted layer)."""

    name: str
    weight: nn.Parameter
    bias: nn.Parameter | None
    activations: list[nn.Module] = dataclasses.field(default_factory=list)


def find_layers(model: nn.Module) -> list[Layer]:
    """Trained weighted layers (a module with a weight matrix or kernel that requires gradients)
    in definition order, named "<top-level module> layer k" (1-based within it), each with the
    activation modules that follow it in the same nn.Sequential.

    Any network's weights are found, so gradients and updates are measured for your own networks
    too. Activations are paired with a layer only inside an nn.Sequential, whose order is the
    order of the forward pass; elsewhere (a custom `forward`, or functional activations) the
    order of definition says nothing about what follows what, so those activations are not
    measured rather than measured under the wrong layer's name."""
    layers: list[Layer] = []
    counts: dict[str, int] = {}
    # the nn.Sequential (by name) that holds the last layer found; None when it is not in one
    last_sequence: str | None = None
    containers = dict(model.named_modules())
    for qualname, module in model.named_modules():
        parent, _, _ = qualname.rpartition(".")
        in_sequence = isinstance(containers.get(parent), nn.Sequential) and qualname != ""
        weight = getattr(module, "weight", None)
        if nn.utils.parametrize.is_parametrized(module, "weight"):  # e.g. spectral norm
            weight = module.parametrizations.weight.original
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
            last_sequence = parent if in_sequence else None
        elif (
            isinstance(module, nn.ReLU | nn.Sigmoid | nn.Tanh)
            and layers
            and in_sequence
            and parent == last_sequence
        ):
            layers[-1].activations.append(module)
    return layers


def posterior_mean_variance(means: torch.Tensor) -> torch.Tensor:
    """Per latent dimension, Cov_x(E_q[z_u | x]) over the images: means (N, D) -> (D,)."""
    return means.double().var(dim=0, unbiased=False)


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many units have Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2016): the rest have
    collapsed to the prior. means: (N, D) posterior means."""
    return int((posterior_mean_variance(means) > threshold).sum())


def _code_layer(layers: Sequence[Layer]) -> str | None:
    """The layer that outputs the code (the encoder's last weighted layer), which carries the
    code's measurements in a diagnostics record."""
    names = [layer.name for layer in layers if layer.name.startswith("encoder layer ")]
    return names[-1] if names else None


def _activation_name(module: nn.Module) -> str:
    # isinstance, not a lookup by type: a subclass of nn.ReLU is still a ReLU
    for kind, name in ((nn.ReLU, "relu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh")):
        if isinstance(module, kind):
            return name
    raise ValueError(f"{type(module).__name__} is not a watched activation")


@torch.no_grad()
def measure_activations(
    model: nn.Module, layers: Sequence[Layer], x: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """Run the model's `validation_step(x)` with hooks on the watched activations.

    Returns {layer name: {"activation", "dead_fraction" (ReLU: units that are zero for every
    image; a conv unit is a channel), "saturated_fraction" (sigmoid/tanh outputs)}}. For a model
    with a likelihood (a posterior over codes), the layer that outputs the code also gets
    "active_units" (`active_units` of the posterior means of x) and "latent_dim"."""
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
            for handle in handles:  # the code is measured without the activation hooks
                handle.remove()
            _measure_code(model, layers, x, results)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return results


def _measure_code(
    model: nn.Module, layers: Sequence[Layer], x: torch.Tensor, results: dict[str, dict[str, Any]]
) -> None:
    """Active units of the posterior means of x, on the layer that outputs the code, for a model
    that declares a likelihood (only such a model has a posterior whose spread means something)."""
    code_layer = _code_layer(layers)
    has_likelihood = getattr(model, "has_likelihood", None)
    encode = getattr(model, "encode", None)
    if code_layer is None or not callable(has_likelihood) or not callable(encode):
        return
    if not has_likelihood():
        return
    means = encode(x)  # the posterior mean: deterministic
    results.setdefault(code_layer, {}).update(
        active_units=active_units(means), latent_dim=int(means.shape[1])
    )
