"""The conformance suite: every family in `MODELS`, with each kind of network (the built-in MLP
and conv networks, and networks of one's own registered with `register_network`), keeps the
`GenerativeModel` contract.

A family added to MODELS runs all of it with nothing else to write: the example family of
docs/adding-a-model.md (docs/examples/tiny_family.py) is added to MODELS by the `family` fixture
and runs every test below. No test names a family; each capability (`monitor`, `loss`,
`likelihood_bound`) is tested where the family declares it, and must raise NotImplementedError
where it does not.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

import latentspace as ls
from conftest import InterruptAfter
from latentspace import runs
from latentspace.config import Config, apply_overrides
from latentspace.diagnostics import find_layers, measure_activations
from latentspace.errors import ConfigError, DataError, RunError
from latentspace.models import DEFAULT_MODEL, MODELS, NETWORKS, GenerativeModel, build_model
from latentspace.models.networks import network_path, registered_path
from latentspace.settings import TrainConfig

# The examples are imported by their import path, as a user's own module would be.
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
tiny_network = importlib.import_module("tiny_network")
tiny_family = importlib.import_module("tiny_family")
EXAMPLE_FAMILY: type[GenerativeModel] = tiny_family.DenoisingAutoEncoder

SHAPE = (3, 12, 10)  # channels, height and width all differ, so a swapped axis shows
LATENT = 3
# The kinds of network every family is run with: model-config fields.
NETWORK_SETUPS: dict[str, dict[str, Any]] = {
    "mlp": {"architecture": "mlp"},
    "conv": {"architecture": "conv"},
    "registered": {
        "encoder": network_path(tiny_network.TinyEncoder),
        "decoder": network_path(tiny_network.TinyDecoder),
    },
}
# Families are run on the data they declare they read (`inputs`): images here; the text
# families by the text branch at the end of this file.
IMAGE_FAMILIES = [name for name, cls in MODELS.items() if cls.inputs == "images"]
TEXT_FAMILIES = [name for name, cls in MODELS.items() if cls.inputs == "text"]
FAMILIES = [*IMAGE_FAMILIES, *[name for name in [EXAMPLE_FAMILY.name] if name not in MODELS]]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A family's name in MODELS; the example family is added to MODELS for the test."""
    name = str(request.param)
    if name not in MODELS:
        monkeypatch.setitem(MODELS, name, EXAMPLE_FAMILY)
    return name


@pytest.fixture(params=list(NETWORK_SETUPS))
def networks(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def model_config(family: str, networks: str) -> Any:
    return MODELS[family].config_class(
        latent_dim=LATENT, hidden_sizes=(16,), channels=(4, 8), **NETWORK_SETUPS[networks]
    )


def build(
    family: str,
    networks: str,
    train: TrainConfig | None = None,
    image_shape: tuple[int, int, int] = SHAPE,
) -> GenerativeModel:
    torch.manual_seed(0)
    return build_model(model_config(family, networks), image_shape, train or TrainConfig())


def images(n: int, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(n))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_in_unit_range(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    x = x.detach()
    assert tuple(x.shape) == shape
    assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def assert_one_line(error: BaseException, *parts: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ---- build and step ------------------------------------------------------------------------
def test_builds_and_takes_a_step(family: str, networks: str) -> None:
    model = build(family, networks, TrainConfig(lr=1e-3))
    assert model.name == family and isinstance(model.config, MODELS[family].config_class)
    assert model.image_shape == SHAPE and model.latent_dim == LATENT
    before = trainable(model)
    x = images(8)
    terms = model.training_step(x, model.configure_optimizers())
    assert "total" in terms
    for key, value in terms.items():
        assert value.dim() == 0 and not value.requires_grad, f"{key}: a detached scalar"
        assert value.dtype == torch.float32 and bool(torch.isfinite(value)), key
    after = dict(model.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n])]
    assert not unchanged, f"every trained parameter takes a step; these did not: {unchanged}"
    validation = model.validation_step(x)
    assert "total" in validation and all(isinstance(v, float) for v in validation.values())
    if model.monitor is not None:
        assert model.monitor in validation, "the monitored term is a validation term"


def test_encode_decode_generate_shapes_and_ranges(family: str, networks: str) -> None:
    model = build(family, networks).eval()
    x = images(2)
    z = model.encode(x)
    assert tuple(z.shape) == (2, LATENT) and bool(torch.isfinite(z).all())
    assert tuple(model.encode(x, sample=True, generator=seeded(0)).shape) == (2, LATENT)
    assert tuple(model.sample_latent(5, generator=seeded(0)).shape) == (5, LATENT)
    assert_in_unit_range(model.decode(z), (2, *SHAPE))
    assert_in_unit_range(model.decode(torch.randn(3, LATENT) * 10), (3, *SHAPE))
    assert_in_unit_range(model.generate(4, generator=seeded(1)), (4, *SHAPE))
    assert_in_unit_range(model.reconstruct(x), (2, *SHAPE))


def test_determinism_given_a_generator(family: str, networks: str) -> None:
    model = build(family, networks).eval()
    x = images(2)
    assert torch.equal(model.encode(x), model.encode(x)), "encode without sample=True repeats"
    global_state = torch.get_rng_state()
    sampled = [model.encode(x, sample=True, generator=seeded(3)) for _ in range(2)]
    generated = [model.generate(4, generator=seeded(1)) for _ in range(2)]
    codes = [model.sample_latent(4, generator=seeded(1)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), global_state), "a generator leaves torch's alone"
    for pair in (sampled, generated, codes):
        assert torch.equal(*pair), "the same generator gives the same draws"
    assert not torch.equal(generated[0], model.generate(4, generator=seeded(2)))


# ---- capabilities --------------------------------------------------------------------------
def test_declared_capabilities(family: str, networks: str, tmp_path: Path, tiny_npz: Path) -> None:
    model = build(family, networks)
    cls = type(model)
    x = images(4)
    if cls.has_loss():
        terms = model.loss(x)
        assert terms.total.dim() == 0 and terms.total.requires_grad
        assert bool(torch.isfinite(terms.total))
        terms.total.backward()
        assert any(p.grad is not None for p in model.parameters())
    else:
        with pytest.raises(NotImplementedError):
            model.loss(x)
    model.eval()
    if cls.has_likelihood():
        bounds = [model.likelihood_bound(x, 3, generator=seeded(0)) for _ in range(2)]
        nll, negative_elbo, kl, code = bounds[0]
        assert tuple(nll.shape) == tuple(negative_elbo.shape) == (4,)
        assert tuple(kl.shape) == tuple(code.shape) == (4, LATENT)
        assert all(bool(torch.isfinite(t).all()) for t in bounds[0])
        assert all(torch.equal(a, b) for a, b in zip(*bounds, strict=True)), "seeded: repeats"
    else:
        with pytest.raises(NotImplementedError):
            model.likelihood_bound(x, 3)
    metrics = model.prior_metrics(torch.randn(32, LATENT, generator=seeded(0)))
    assert all(isinstance(v, float) for v in metrics.values())
    if model.monitor is None:  # nothing to stop early on: patience is refused in one line
        config = run_config(family, networks, tiny_npz, ["train.patience=1"])
        with pytest.raises(ConfigError) as error:
            ls.train(config, tmp_path / "run", quiet=True, diagnostics=False, report=False)
        assert_one_line(error.value, "patience")


# ---- training settings ---------------------------------------------------------------------
def test_bf16_step(family: str, networks: str) -> None:
    model = build(family, networks, TrainConfig(lr=1e-3, precision="bf16"))
    dtypes: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out: dtypes.add(out.dtype) if isinstance(out, torch.Tensor) else None
        )
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)
        or not list(m.children())  # the leaves of a network of one's own
    ]
    before = trainable(model)
    terms = model.training_step(images(8), model.configure_optimizers())
    for hook in hooks:
        hook.remove()
    assert torch.bfloat16 in dtypes, "the forward pass ran under bfloat16 autocast"
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v)) for v in terms.values())
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights stay float32"
    after = dict(model.named_parameters())
    assert any(not torch.equal(p, after[n]) for n, p in before.items())


def test_weight_penalties(family: str, networks: str) -> None:
    l1, l2 = 1e-3, 1e-2
    model = build(family, networks, TrainConfig(l1=l1, l2=l2))
    # weight matrices and kernels of the trained networks (biases and norms are not penalised)
    weights = [p.detach().clone() for p in model.parameters() if p.requires_grad and p.dim() > 1]
    terms = model.training_step(images(8), model.configure_optimizers())
    assert float(terms["l1"]) == pytest.approx(l1 * sum(float(w.abs().sum()) for w in weights))
    assert float(terms["l2"]) == pytest.approx(l2 * sum(float(w.pow(2).sum()) for w in weights))
    plain = build(family, networks)
    plain_terms = plain.training_step(images(8), plain.configure_optimizers())
    assert float(plain_terms["l1"]) == 0.0 and float(plain_terms["l2"]) == 0.0
    penalised, unpenalised = dict(model.named_parameters()), dict(plain.named_parameters())
    assert any(not torch.equal(p, unpenalised[n]) for n, p in penalised.items())


# ---- errors --------------------------------------------------------------------------------
# Families whose encode/decode do not yet call check_images/check_codes: the one place the suite
# names families. strict, so the mark must go when the family checks its inputs.
def test_wrong_input_shape_is_a_one_line_error(family: str) -> None:
    model = build(family, "mlp").eval()
    c, h, w = SHAPE
    expected = f"(B, {c}, {h}, {w})"
    for bad in (images(2, (c + 1, h, w)), images(2, (c, w, h)), torch.rand(c, h, w)):
        with pytest.raises(DataError) as error:
            model.encode(bad)
        assert_one_line(error.value, expected, str(tuple(bad.shape)))
    for codes in (torch.rand(2, LATENT + 1), torch.rand(LATENT)):
        with pytest.raises(DataError) as error:
            model.decode(codes)
        assert_one_line(error.value, f"(B, {LATENT})", str(tuple(codes.shape)))


class _WrongEncoder(nn.Module):
    """Gives 97 features whatever a family asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.LazyLinear(97)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class _WrongDecoder(nn.Module):
    """Gives images one row taller than asked for."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        c, h, w = SHAPE
        self.linear, self.shape = nn.Linear(latent_dim, c * (h + 1) * w), (c, h + 1, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).unflatten(1, self.shape)


def test_a_network_that_breaks_the_shape_contract_is_refused(family: str) -> None:
    config = model_config(family, "mlp")
    c, h, w = SHAPE
    with pytest.raises(ConfigError) as error:
        build_model(config, SHAPE, encoder=_WrongEncoder())
    assert_one_line(error.value, f"(B, {c}, {h}, {w})", "(2, 97)")
    with pytest.raises(ConfigError) as error:
        build_model(config, SHAPE, decoder=_WrongDecoder(LATENT))
    assert_one_line(error.value, f"(B, {c}, {h}, {w})", f"(2, {c}, {h + 1}, {w})")


# ---- runs: save and load, resume -------------------------------------------------------------
def test_save_load_round_trip_is_bit_exact(family: str, networks: str, tmp_path: Path) -> None:
    model = build(family, networks, TrainConfig(lr=1e-2))
    optimizers = model.configure_optimizers()
    for _ in range(2):  # trained weights and running statistics, not the initial ones
        model.training_step(images(8), optimizers)
    model.eval()
    config = Config(model=model.config, train=model.train_config)
    runs.save_config(tmp_path, config, SHAPE)
    runs.save_model(tmp_path, model, epoch=1)
    run = ls.open_run(tmp_path)
    assert type(run.model) is type(model) and run.config.model == model.config
    saved, loaded = model.state_dict(), run.model.state_dict()
    assert list(saved) == list(loaded)
    for key, tensor in saved.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    z = model.sample_latent(4, generator=seeded(0))
    assert torch.equal(model.decode(z), run.model.decode(z))
    assert torch.equal(
        model.generate(3, generator=seeded(1)), ls.load(tmp_path).generate(3, generator=seeded(1))
    )


def run_config(family: str, networks: str, npz: Path, overrides: Sequence[str] = ()) -> Config:
    config = ls.default_config(
        family, dataset=str(npz), epochs=2, batch_size=16, latent_dim=LATENT, device="cpu"
    )
    setup = [f"model.{k}={v}" for k, v in NETWORK_SETUPS[networks].items()]
    common = ["model.hidden_sizes=16", "model.channels=4,8", "data.binarize=dynamic"]
    return apply_overrides(config, [*common, *setup, *overrides])


def given_networks(
    family: str, networks: str, image_shape: tuple[int, int, int]
) -> dict[str, nn.Module]:
    """The registered networks of a setup as modules, with the features this family asks for
    (taken from a model built from their import paths, so no family is named here)."""
    paths = {k: v for k, v in NETWORK_SETUPS[networks].items() if k in ("encoder", "decoder")}
    probe = build(family, networks, image_shape=image_shape)
    return {
        key: next(m for m in probe.modules() if type(m) is NETWORKS[path])
        for key, path in paths.items()
    }


class _StartingWeights:
    """Records whether each given module is trained in place from its weights as given."""

    def __init__(self, given: dict[str, nn.Module]) -> None:
        self.given = given
        self.initial = {k: copy.deepcopy(m.state_dict()) for k, m in given.items()}
        self.kept: dict[str, bool] = {}

    def on_train_start(self, trainer: Any) -> None:
        inside = list(trainer.model.modules())
        for key, module in self.given.items():
            same = all(torch.equal(v, module.state_dict()[k]) for k, v in self.initial[key].items())
            self.kept[key] = same and any(m is module for m in inside)


def test_resume_equals_an_uninterrupted_run(
    family: str, networks: str, tmp_path: Path, tiny_npz: Path
) -> None:
    """A registered setup passes its networks as modules (`ls.train(..., encoder=module)`);
    the resumed half is built from config.json alone."""
    given = given_networks(family, networks, ls.resolve(str(tiny_npz)).image_shape)
    config = run_config(family, networks, tiny_npz)
    if given:  # named by the modules, not the config
        config = apply_overrides(config, [f"model.{key}=" for key in given])
    watch = _StartingWeights(copy.deepcopy(given))
    ls.train(
        config, tmp_path / "straight", quiet=True, callbacks=[watch], **watch.given, report=False
    )
    assert all(watch.kept.values()), "given modules are trained in place from their weights"
    with pytest.raises(KeyboardInterrupt):
        ls.train(
            config,
            tmp_path / "resumed",
            quiet=True,
            callbacks=[InterruptAfter(1)],
            **copy.deepcopy(given),
            report=False,
        )
    ls.train(config, tmp_path / "resumed", resume=True, quiet=True, report=False)
    straight, resumed = (
        safetensors.torch.load_file(str(tmp_path / name / runs.WEIGHTS))
        for name in ("straight", "resumed")
    )
    assert list(straight) == list(resumed)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [r["epoch"] for r in ls.open_run(tmp_path / "resumed").metrics] == [1, 2]
    recorded = json.loads((tmp_path / "resumed" / runs.CONFIG).read_text())["config"]["model"]
    for key, path in NETWORK_SETUPS[networks].items():
        assert recorded[key] == path, "config.json names the networks to rebuild"


# ---- your own networks: ls.train(encoder=..., decoder=...) -----------------------------------
def _default_run_config(npz: Path) -> Config:
    return run_config(DEFAULT_MODEL, "mlp", npz, ["train.epochs=1"])


def test_a_run_of_your_own_networks_loads_in_a_new_process(tmp_path: Path, tiny_npz: Path) -> None:
    config = _default_run_config(tiny_npz)
    decoder = tiny_network.TinyDecoder((1, 12, 12), config.model.latent_dim)
    out = tmp_path / "run"
    ls.train(config, out, decoder=decoder, quiet=True, diagnostics=False, report=False)
    document = json.loads((out / runs.CONFIG).read_text())
    assert document["config"]["model"]["decoder"] == "tiny_network:TinyDecoder"
    script = textwrap.dedent(
        f"""
        import sys, torch, latentspace as ls
        assert "tiny_network" not in sys.modules
        model = ls.load({str(out)!r})
        z = torch.randn(4, {config.model.latent_dim}, generator=torch.Generator().manual_seed(0))
        torch.save(model.decode(z), {str(tmp_path / "decoded.pt")!r})
        """
    )
    path = os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": path}
    )
    z = torch.randn(4, config.model.latent_dim, generator=seeded(0))
    decoded = torch.load(tmp_path / "decoded.pt", weights_only=True)
    assert torch.equal(decoded, ls.load(out).decode(z))
    # a run whose network cannot be imported says which, in one line
    document["config"]["model"]["decoder"] = "no_such_module_here:TinyDecoder"
    (out / runs.CONFIG).write_text(json.dumps(document))
    with pytest.raises(RunError) as error:
        ls.load(out)
    assert_one_line(error.value, "no_such_module_here:TinyDecoder", "cannot import")


class _Unregistered(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 12 * 12)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).unflatten(1, (1, 12, 12))


def test_train_refuses_networks_a_run_could_not_rebuild(
    tmp_path: Path, tiny_npz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _default_run_config(tiny_npz)
    latent = config.model.latent_dim
    out = tmp_path / "run"

    def refused(match: str, **kwargs: Any) -> None:
        with pytest.raises(ConfigError) as error:
            ls.train(kwargs.pop("config", config), out, quiet=True, **kwargs, report=False)
        assert_one_line(error.value, match)
        assert not (out / runs.CONFIG).exists(), "refused before anything is written"

    refused("register it with @latentspace.register_network", decoder=_Unregistered((1,), latent))
    in_main = type("InMain", (_Unregistered,), {"__module__": "__main__"})
    monkeypatch.setitem(NETWORKS, network_path(in_main), in_main)
    refused("move it into an importable module", decoder=in_main((1,), latent))
    wider = tiny_network.TinyDecoder((1, 12, 12), latent, width=16)
    refused("cannot be rebuilt from their registered factories", decoder=wider)
    other = apply_overrides(config, [f"model.decoder={network_path(in_main)}"])
    decoder = tiny_network.TinyDecoder((1, 12, 12), latent)
    refused("tiny_network:TinyDecoder", config=other, decoder=decoder)
    refused("do not pass encoder= or decoder=", decoder=decoder, resume=True)
    # a module built by a registered function is saved under the function's path
    built = tiny_network.tiny_mlp_encoder((1, 12, 12), 5)
    assert registered_path(built, "encoder") == network_path(tiny_network.tiny_mlp_encoder)
    assert registered_path(copy.deepcopy(built), "encoder") == "tiny_network:tiny_mlp_encoder"


class _MyReLU(nn.ReLU):
    pass


# ---- the text branch: families whose `inputs` is "text" ------------------------------------
TEXT_SHAPE = (1, 12, 40)  # (1, max tokens, vocabulary size)


def tokens(n: int) -> torch.Tensor:
    """n token-id rows BOS ... EOS of different lengths, padded with 0."""
    ids = torch.randint(4, TEXT_SHAPE[2], (n, 9), generator=seeded(n))
    ids[:, 0] = 2
    for i in range(n):
        end = 3 + i % 6
        ids[i, end], ids[i, end + 1 :] = 3, 0
    return ids


def build_text(family: str, train: TrainConfig | None = None) -> GenerativeModel:
    torch.manual_seed(0)
    config = MODELS[family].config_class(embedding_dim=8, hidden_size=16)
    return build_model(config, TEXT_SHAPE, train or TrainConfig(lr=1e-2))


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_family_steps_encodes_decodes_and_bounds(family: str) -> None:
    model = build_text(family)
    assert model.monitor is not None and model.has_likelihood()
    before = trainable(model)
    terms = model.training_step(tokens(8), model.configure_optimizers())
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    after = dict(model.named_parameters())
    assert not [n for n, p in before.items() if torch.equal(p, after[n])]
    assert model.monitor in model.validation_step(tokens(8))
    model.eval()
    d = model.latent_dim
    z = model.encode(tokens(3))
    assert tuple(z.shape) == (3, d) and torch.equal(z, model.encode(tokens(3)))
    assert tuple(model.sample_latent(5, generator=seeded(0)).shape) == (5, d)
    sentences = model.decode(z)  # no tokenizer (built without data): ids as words
    assert isinstance(sentences, list) and len(sentences) == 3
    generated = [model.generate(4, generator=seeded(1)) for _ in range(2)]
    assert generated[0] == generated[1] and len(generated[0]) == 4
    bound = model.likelihood_bound(tokens(4), 3, generator=seeded(0))
    assert tuple(bound.nll.shape) == (4,) and tuple(bound.code.shape) == (4, d)
    assert bool(torch.isfinite(bound.nll).all() and torch.isfinite(bound.negative_elbo).all())
    with pytest.raises(DataError) as error:
        model.encode(images(2))
    assert_one_line(error.value, "token ids")
    with pytest.raises(DataError) as error:
        model.decode(torch.rand(2, d + 1))
    assert_one_line(error.value, f"(B, {d})")


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_family_save_load_round_trip_is_bit_exact(family: str, tmp_path: Path) -> None:
    model = build_text(family)
    optimizers = model.configure_optimizers()
    for _ in range(2):
        model.training_step(tokens(8), optimizers)
    model.eval()
    runs.save_config(tmp_path, Config(model=model.config, train=model.train_config), TEXT_SHAPE)
    runs.save_model(tmp_path, model, epoch=1)
    loaded = ls.open_run(tmp_path).model
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    z = model.sample_latent(3, generator=seeded(0))
    assert model.decode(z) == loaded.decode(z)


def test_diagnostics_measure_networks_of_your_own() -> None:
    """Weights of any network are found; activations only where the order of the forward pass
    is known (an nn.Sequential), and a subclass of a watched activation is measured."""
    config = model_config(DEFAULT_MODEL, "registered")
    model = build_model(config, SHAPE)
    layers = find_layers(model)  # custom forward(): its layers, but no activations to pair
    assert len(layers) >= 4 and all(not layer.activations for layer in layers)
    features = next(m for m in model.modules() if type(m) is tiny_network.TinyEncoder).head
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 12 * 10, 8), _MyReLU(), nn.Linear(8, features.out_features)
    )
    mixed = build_model(config, SHAPE, encoder=encoder)
    measured = measure_activations(mixed, find_layers(mixed), images(4))
    assert [m["activation"] for m in measured.values() if "activation" in m] == ["relu"]
