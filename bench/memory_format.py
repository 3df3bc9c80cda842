"""Channels-last weights against the default layout: training steps of the same convolutional
models, same process, alternating rounds so a noisy neighbour hurts both sides alike.

    .venv/bin/python bench/memory_format.py [--threads 1] [--rounds 6] [--steps 40]

build_model keeps a convolutional model's weights channels-last (NHWC); this builds each model of
the list twice from the same seed, turns one back to the default (NCHW) layout, times --steps
training steps on a fixed MNIST-sized batch per round, drops the first round (warm-up) and prints
ms per step and the ratio default / channels-last (above 1: channels-last is faster). Models: the
shipped DCGAN (the mnist-dcgan config: bf16, R1 on every 4th step) and a convolutional VAE.
"""

from __future__ import annotations

import argparse
import time

import torch

import latentspace as ls
from latentspace.config import Config, apply_overrides, load_config
from latentspace.models import GenerativeModel, build_model

MODELS = {
    "DCGAN (mnist-dcgan)": lambda: load_config("mnist-dcgan"),
    "conv VAE (channels 32,64, bf16)": lambda: apply_overrides(
        ls.default_config("vae", dataset="mnist", architecture="conv", precision="bf16"),
        ["model.channels=32,64"],
    ),
}


def build(config: Config, layout: torch.memory_format) -> tuple[GenerativeModel, list]:
    torch.manual_seed(0)
    model = build_model(config.model, (1, 28, 28), config.train).to(memory_format=layout)
    optimizers = model.configure_optimizers()
    model.train()
    return model, optimizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, make in MODELS.items():
        config = make()
        pair = {
            "default": build(config, torch.contiguous_format),
            "channels-last": build(config, torch.channels_last),
        }
        x = torch.rand(config.train.batch_size, 1, 28, 28)
        seconds = dict.fromkeys(pair, 0.0)
        for round_ in range(args.rounds):
            for layout, (model, optimizers) in pair.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    model.training_step(x, optimizers)
                if round_ > 0:
                    seconds[layout] += time.perf_counter() - start
        steps = (args.rounds - 1) * args.steps
        ms = {layout: 1000 * s / steps for layout, s in seconds.items()}
        print(
            f"{name}: default {ms['default']:.1f} ms/step, channels-last "
            f"{ms['channels-last']:.1f} ms/step -> ratio {ms['default'] / ms['channels-last']:.2f}x "
            f"({args.threads} thread(s))"
        )


if __name__ == "__main__":
    main()
