"""latentspace: train, explore and tune autoencoders, VAEs and GANs on real image data.

import latentspace as ls
config = ls.default_config("vae", dataset="mnist", epochs=10)
run = ls.train(config, "runs/mnist-vae")
model = ls.load("runs/mnist-vae")
z = model.encode(x)          # x: (B, C, H, W) in [0, 1] -> (B, latent_dim)
images = model.decode(z)

Your own networks (docs/adding-a-model.md): decorate the class in an importable module with
`@ls.register_network`, build it as `Encoder(image_shape, features)`, and pass it:
ls.train(config, "runs/mine", encoder=Encoder((1, 28, 28), 2 * config.model.latent_dim))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# OpenMP's spin-waiting made two threads 5-10x slower than one on a busy 2-core machine; a
# passive wait policy recovers most of it. It must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from latentspace._version import __version__
from latentspace.config import (
    Config,
    DataConfig,
    TrainConfig,
    apply_overrides,
    default_config,
    load_config,
)
from latentspace.data import ImageSet, resolve
from latentspace.errors import LatentspaceError
from latentspace.journal import compress, decompress
from latentspace.models import (
    GAN,
    MODELS,
    NETWORKS,
    VAE,
    AEConfig,
    AutoEncoder,
    GANConfig,
    GenerativeModel,
    VAEConfig,
    register_network,
)
from latentspace.runs import Run, load_model, open_run
from latentspace.train import Trainer
from latentspace.train import train as _train_run

if TYPE_CHECKING:
    from torch import nn

load = load_model


def train(
    config: Config,
    out: str | Path,
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    callbacks: Sequence[object] = (),
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    diagnostics: bool = True,
    report: bool = True,
) -> Run:
    """Train as `latentspace train` does: `latentspace.train.train` (which documents every other
    option), then, with report=True, report.html and its figures in the run, written the same
    way (a figure that cannot be made is a line in the page; a report that cannot be written is
    one warning line, never a failed run). Returns the opened run."""
    from latentspace.analysis.report import write_training_report
    from latentspace.distributed import is_main

    say = log or (lambda line: print(line, flush=True))
    run = _train_run(
        config,
        out,
        encoder=encoder,
        decoder=decoder,
        resume=resume,
        init=init,
        callbacks=callbacks,
        quiet=quiet,
        log=log,
        diagnostics=diagnostics,
    )
    if is_main():  # under torchrun, rank 0 alone speaks and writes the report
        if not quiet:
            say(f"run saved in {run.path}")
        if report:
            write_training_report(run.path, quiet=quiet, log=say)
    return run


__all__ = [
    "GAN",
    "MODELS",
    "NETWORKS",
    "VAE",
    "AEConfig",
    "AutoEncoder",
    "Config",
    "DataConfig",
    "GANConfig",
    "GenerativeModel",
    "ImageSet",
    "LatentspaceError",
    "Run",
    "TrainConfig",
    "Trainer",
    "VAEConfig",
    "__version__",
    "apply_overrides",
    "compress",
    "decompress",
    "default_config",
    "load",
    "load_config",
    "open_run",
    "register_network",
    "resolve",
    "train",
]
