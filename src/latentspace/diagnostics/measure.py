"""Finding a model's weighted layers and measuring its activations on a validation batch."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# slope below 5% of its peak: sigmoid y(1-y) < 0.25 * 0.05; tanh 1 - y^2 < 0.05
_SIGMOID_EDGE = 0.5 - math.sqrt(0.25 - 0.25 * 0.05)
_TANH_EDGE = math.sqrt(1.0 - 0.05)


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
