"""Your own encoder and decoder: a registry of named networks that a config can name.

A network is registered under its import path (`package.module:Name`) by decorating its class or
factory with `register_network`; it is built as `factory(image_shape, features)`:

- an encoder takes images (B, C, H, W) in [0, 1] and returns (B, features): the features the
  family asks for (a VAE's 2 x latent_dim, an AE's latent_dim, a GAN discriminator's 1 score);
- a decoder takes codes (B, features = latent_dim) and returns logits (B, C, H, W): the family
  turns them into images (a sigmoid for pixels in [0, 1]).

`model.encoder` / `model.decoder` in a config hold the import path; empty means the built-in MLP
or conv network of `model.architecture`. A run saves the path in config.json and its weights in
safetensors, so it reloads by importing the named module (installed code, never code from the
file) and building the network again; nothing is pickled. The shape contract is checked on a
probe batch before training, with a one-line error naming the expected and actual shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import nn

from latentspace.errors import ConfigError
from latentspace.models.layers import NetworkConfig, build_decoder, build_encoder

__all__ = [
    "NETWORKS",
    "NetworkFactory",
    "check_decoder",
    "check_encoder",
    "make_decoder",
    "make_encoder",
    "name_networks",
    "network_path",
    "register_network",
    "registered_path",
]

NetworkFactory = Callable[[tuple[int, int, int], int], nn.Module]
F = TypeVar("F", bound=Callable[..., nn.Module])

# import path -> factory; filled by @register_network when the defining module is imported
NETWORKS: dict[str, NetworkFactory] = {}
# the attribute a module built by a registered function (not a class) carries: that function's
# path, since the module's own class (often nn.Sequential) says nothing about how to rebuild it
_BUILT_BY = "_latentspace_network"


def network_path(factory: Callable[..., Any]) -> str:
    """The import path `module:qualname` a network is registered and saved under."""
    return f"{factory.__module__}:{factory.__qualname__}"


def register_network(factory: F) -> F:
    """Register a network class or factory `factory(image_shape, features) -> nn.Module` under its
    import path, so a config can name it and a saved run can build it again. Its module must be
    importable (not `__main__`) for a run to reload in another process.

    A decorated class is returned unchanged; a decorated function is wrapped so that the modules
    it builds remember it (`registered_path` then finds it from the module alone)."""
    path = network_path(factory)
    if isinstance(factory, type):
        NETWORKS[path] = factory
        return factory

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> nn.Module:
        module = factory(*args, **kwargs)
        # a plain attribute: not in state_dict, but kept by copy.deepcopy
        object.__setattr__(module, _BUILT_BY, path)
        return module

    NETWORKS[path] = build
    return cast(F, build)


def registered_path(module: nn.Module, key: str) -> str:
    """The import path a network given as a module is saved under: that of the registered
    function that built it, else that of its registered class. A one-line ConfigError when
    neither is registered, or when it is defined in `__main__` (no other process can import
    that, so the run could not be reloaded). key: how the caller names it (`encoder`)."""
    name = type(module).__name__
    path = getattr(module, _BUILT_BY, None) or network_path(type(module))
    if path not in NETWORKS:
        raise ConfigError(
            f"{key} = {name}(...) is not a registered network: register it with "
            "@latentspace.register_network on its class (or on the function that builds it)"
        )
    if path.partition(":")[0] == "__main__":
        raise ConfigError(
            f"{key} = {name}(...) is defined in __main__, which a saved run cannot import again: "
            "move it into an importable module (a .py file beside your script) and import it"
        )
    return path


def _resolve(path: str, key: str) -> NetworkFactory:
    """The registered factory for `path`, importing its module first when it is not loaded yet
    (importing runs the module's @register_network)."""
    if path not in NETWORKS:
        module, sep, _ = path.partition(":")
        if not sep or not module:
            raise ConfigError(f"{key} = {path!r}: name a registered network as package.module:Name")
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"{key} = {path!r}: cannot import {module} ({error}); install or put on the "
                "Python path the module that defines the network"
            ) from None
        except Exception as error:  # the module itself is broken: say so, in one line
            detail = f"{type(error).__name__}: {error}".splitlines()[0]
            raise ConfigError(
                f"{key} = {path!r}: importing {module} failed ({detail}); fix that module"
            ) from None
    if path not in NETWORKS:
        raise ConfigError(
            f"{key} = {path!r} is not a registered network: decorate it with "
            "@latentspace.register_network"
        )
    return NETWORKS[path]


def _shape(dims: tuple[int | str, ...]) -> str:
    return f"({', '.join(map(str, dims))})"


@torch.no_grad()
def _check(
    module: nn.Module, role: str, what: str, given: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    """Run `module` on a probe batch of shape `given` (B = 2; images uniform in [0, 1], codes
    standard normal) and raise a one-line ConfigError unless its output has shape `expected`."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    probe = (
        torch.rand(given, device=device) if what == "images" else torch.randn(given, device=device)
    )
    was_training = module.training
    module.eval()
    try:
        out = module(probe)
    except Exception as error:
        raise ConfigError(
            f"the {role} {type(module).__name__} failed on {what} of shape {_shape(given)}: "
            f"{error}".splitlines()[0]
        ) from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        actual = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"the {role} {type(module).__name__} must map {what} {_shape(('B', *given[1:]))} to "
            f"{_shape(('B', *expected[1:]))}; it gave {actual} for B = 2"
        )


def check_encoder(module: nn.Module, image_shape: tuple[int, int, int], features: int) -> None:
    """A one-line ConfigError unless `module` maps (2, C, H, W) images to (2, features)."""
    _check(module, "encoder", "images", (2, *image_shape), (2, features))


def check_decoder(module: nn.Module, image_shape: tuple[int, int, int], latent_dim: int) -> None:
    """A one-line ConfigError unless `module` maps (2, latent_dim) codes to (2, C, H, W)."""
    _check(module, "decoder", "codes", (2, latent_dim), (2, *image_shape))


def make_encoder(
    config: NetworkConfig,
    image_shape: tuple[int, int, int],
    features: int,
    module: nn.Module | None = None,
    *,
    path: str | None = None,
) -> nn.Module:
    """The encoder a family uses: `module` if given, else the network `path` (default
    `config.encoder`) names, else the built-in one of `config.architecture`. A given or named
    network is checked against the shape contract first."""
    path = config.encoder if path is None else path
    if module is None and not path:
        return build_encoder(config, image_shape, features)
    if module is None:
        module = _resolve(path, "model.encoder")(image_shape, features)
    check_encoder(module, image_shape, features)
    return module


def make_decoder(
    config: NetworkConfig,
    image_shape: tuple[int, int, int],
    module: nn.Module | None = None,
) -> nn.Module:
    """The decoder a family uses, chosen as `make_encoder` chooses the encoder; it maps codes
    (B, latent_dim) to logits (B, C, H, W)."""
    if module is None and not config.decoder:
        return build_decoder(config, image_shape)
    if module is None:
        module = _resolve(config.decoder, "model.decoder")(image_shape, config.latent_dim)
    check_decoder(module, image_shape, config.latent_dim)
    return module


def name_networks(config: Any, networks: dict[str, nn.Module]) -> Any:
    """The model config `config` with the import path of each given network (key "encoder" or
    "decoder") in its field of that name, so config.json records how to rebuild it."""
    paths = {key: registered_path(module, key) for key, module in networks.items()}
    for key, path in paths.items():
        if not hasattr(config, key):
            raise ConfigError(f"a {config.name} model takes no {key}= network")
        named = getattr(config, key)
        if named and named != path:
            raise ConfigError(
                f"model.{key} = {named!r} but the {key} given is {path}: "
                f"pass one of them (or set model.{key} = {path!r})"
            )
    if not paths:
        return config
    return dataclasses.replace(config, **paths)
