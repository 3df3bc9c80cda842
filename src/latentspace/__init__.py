"""latentspace: train, explore and tune autoencoders, VAEs and GANs on real image data.

import latentspace as ls
config = ls.default_config("vae", dataset="mnist", epochs=10)
run = ls.train(config, "runs/mnist-vae")
model = ls.load("runs/mnist-vae")
z = model.encode(x)          # x: (B, C, H, W) in [0, 1] -> (B, latent_dim)
images = model.decode(z)
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
    load_config,
)
from latentspace.data import ImageSet, resolve
from latentspace.errors import LatentspaceError
from latentspace.models import (
    GAN,
    MODELS,
    VAE,
    AEConfig,
    AutoEncoder,
    GANConfig,
    GenerativeModel,
    VAEConfig,
)
from latentspace.runs import Run, load_model, open_run
from latentspace.train import Trainer, train

load = load_model

__all__ = [
    "GAN",
    "MODELS",
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
    "resolve",
    "train",
]


def default_config(model: str = "vae", **overrides: object) -> Config:
    """A Config with every default, for the model family `model`; keyword overrides name a field
    of any section (`dataset="fashion-mnist"`, `lr=3e-4`, `latent_dim=2`)."""
    config = apply_overrides(Config(model=MODELS[model].config_class()), [])
    items = []
    sections = {"data": config.data, "train": config.train, "model": config.model}
    for key, value in overrides.items():
        owners = [s for s, obj in sections.items() if hasattr(obj, key) and key != "name"]
        if len(owners) != 1:
            problem = "is ambiguous (data.channels or model.channels?)" if owners else "is unknown"
            raise LatentspaceError(
                f"default_config: setting {key!r} {problem}; use "
                "apply_overrides(config, ['section.key=value'])"
            )
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
        items.append(f"{owners[0]}.{key}={text}")
    return apply_overrides(config, items)
