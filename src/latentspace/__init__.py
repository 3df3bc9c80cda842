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
from latentspace.train import Trainer, train

load = load_model

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
    "default_config",
    "load",
    "load_config",
    "open_run",
    "register_network",
    "resolve",
    "train",
]
