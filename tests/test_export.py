"""`latentspace export RUN --format onnx`: onnxruntime gives PyTorch's outputs within 1e-5 for
every family and image shape of the conformance suite, on batches of 1 and 5 (the batch
dimension is dynamic); a graph that does not is refused and nothing is left; docs/examples/
decode_onnx.py decodes an exported run without latentspace or torch; hostile inputs are one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import latentspace as ls
from conftest import make_images
from latentspace.cli import main
from latentspace.export import TOLERANCE, ExportError, export_model, why_no_encoder_graph
from latentspace.models import MODELS, GenerativeModel, build_model
from latentspace.models.networks import network_path

onnxruntime = pytest.importorskip("onnxruntime")  # the `export` extra

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
tiny_network = importlib.import_module("tiny_network")
EXAMPLE_FAMILY: type[GenerativeModel] = importlib.import_module("tiny_family").DenoisingAutoEncoder
# image families (a text model's sentences are no tensor graph input; not exported)
IMAGE_FAMILIES = [name for name, cls in MODELS.items() if cls.inputs == "images"]
FAMILIES = [*IMAGE_FAMILIES, *[name for name in [EXAMPLE_FAMILY.name] if name not in MODELS]]
# the kinds of network of tests/test_conformance.py
NETWORKS: dict[str, dict[str, Any]] = {
    "mlp": {"architecture": "mlp"},
    "conv": {"architecture": "conv"},
    "registered": {
        "encoder": network_path(tiny_network.TinyEncoder),
        "decoder": network_path(tiny_network.TinyDecoder),
    },
}
SHAPES = [(1, 12, 12), (3, 16, 16), (1, 13, 11)]
LATENT = 3
# an encoder that is an optimisation (GAN inversion) shows it in one step as well as in 200
ONE_STEP_ENCODE = {"inversion_steps": 1, "inversion_restarts": 1}
SCRIPT = EXAMPLES / "decode_onnx.py"


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A family's name in MODELS; the example family is added to MODELS for the test."""
    name = str(request.param)
    if name not in MODELS:
        monkeypatch.setitem(MODELS, name, EXAMPLE_FAMILY)
    return name


def tiny_model(family: str, networks: str, shape: tuple[int, int, int]) -> GenerativeModel:
    config_class = MODELS[family].config_class
    fields = {field.name for field in dataclasses.fields(config_class)}
    cheap = {key: value for key, value in ONE_STEP_ENCODE.items() if key in fields}
    config = config_class(
        latent_dim=LATENT, hidden_sizes=(16,), channels=(4, 8), **NETWORKS[networks], **cheap
    )
    torch.manual_seed(0)
    return build_model(config, shape).eval()


def max_difference(
    folder: Path, manifest: dict, part: str, x: torch.Tensor, function: Any
) -> float:
    entry = manifest["parts"][part]
    session = onnxruntime.InferenceSession(
        str(folder / entry["file"]), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run([entry["output"]["name"]], {entry["input"]["name"]: x.numpy()})
    with torch.no_grad():
        expected = function(x).numpy()
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


# ---- the target: every family, network and image shape ---------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("networks", list(NETWORKS))
def test_onnx_outputs_equal_pytorchs(
    family: str, networks: str, shape: tuple[int, int, int], tmp_path: Path
) -> None:
    model = tiny_model(family, networks, shape)
    out = tmp_path / "onnx"
    manifest = export_model(model, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert set(manifest["parts"]) | set(manifest["not_exported"]) == {"encoder", "decoder"}
    assert "decoder" in manifest["parts"]
    assert manifest["latent_dim"] == LATENT and manifest["image_shape"] == list(shape)
    assert manifest["family"] == family
    generator = torch.Generator().manual_seed(123)
    for batch in (1, 5):
        codes = 2 * torch.randn(batch, LATENT, generator=generator)
        assert max_difference(out, manifest, "decoder", codes, model.decode) <= TOLERANCE
        if "encoder" in manifest["parts"]:
            images = torch.rand(batch, *shape, generator=generator)
            assert max_difference(out, manifest, "encoder", images, model.encode) <= TOLERANCE
    for entry in manifest["parts"].values():
        assert entry["max_abs_difference"] <= TOLERANCE
        assert entry["sha256"] == hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest()


def test_an_encoder_network_is_exported_and_an_optimisation_is_not() -> None:
    """Families whose encode is a network (AE, VAE: its posterior mean) export it; a GAN's
    encode is an inversion by gradient descent, said in one line."""
    for name in IMAGE_FAMILIES:
        reason = why_no_encoder_graph(tiny_model(name, "mlp", SHAPES[0]))
        if not MODELS[name].encode_is_network:
            assert reason is not None and "optimisation" in reason and "\n" not in reason
        else:
            assert reason is None, name


# ---- refusing a graph that does not match ----------------------------------------------------
class ReadsAValue(nn.Module):
    """A decoder whose trace is wrong: it scales by a number read from its input, which the
    tracer records as the probe batch's constant."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) * float(z.abs().max())


class CountsTheBatch(nn.Module):
    """A decoder whose trace fixes the batch size: len(z) becomes a constant, so the graph
    gives 2 images for 1 code (broadcasting) and fails on 5."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) + torch.zeros(len(z), 1, 1, 1)


class ReshapesByTheBatch(CountsTheBatch):
    """The same in a reshape: 3 numbers of one code cannot make 2 rows, onnxruntime fails."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z.reshape(len(z), -1))


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (ReadsAValue, r"decoder differs from PyTorch by \S+ \(more than 1e-05\)"),
        (
            CountsTheBatch,
            r"gives shape \(2, 1, 12, 12\) for a batch of 1, PyTorch \(1, 1, 12, 12\)",
        ),
        (ReshapesByTheBatch, "onnxruntime cannot run the exported decoder on a batch of 1"),
    ],
)
def test_a_graph_that_differs_from_pytorch_is_refused_and_nothing_is_left(
    broken: type[nn.Module], message: str, tmp_path: Path
) -> None:
    model = tiny_model("vae", "mlp", SHAPES[0])
    model.decoder = broken(model.decoder)
    with pytest.raises(ExportError, match=message) as error:
        export_model(model, tmp_path / "onnx")
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary copy


class BesselDecoder(CountsTheBatch):
    """A decoder with an operator ONNX has no counterpart for (the Bessel function I0)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(self.inner(z))


def test_an_operator_torch_cannot_export_is_one_line_and_prints_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """torch's exporter prints the whole graph from C++ when it fails; that is kept quiet."""
    model = tiny_model("vae", "mlp", SHAPES[0])
    model.decoder = BesselDecoder(model.decoder)
    with pytest.raises(ExportError, match=r"torch cannot export the decoder: .*'aten::i0'"):
        export_model(model, tmp_path / "onnx")
    print("still printing")
    assert capfd.readouterr().out == "still printing\n"
    assert list(tmp_path.iterdir()) == []


# ---- the command -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny VAE run trained once for this file's command tests (which leave it as it is),
    and the images it trained on (.npz)."""
    folder = tmp_path_factory.mktemp("export")
    images = folder / "tiny.npz"
    np.savez(images, images=make_images(64), labels=np.arange(64) % 4)
    config = ls.default_config(
        "vae", dataset=str(images), epochs=1, batch_size=16, latent_dim=2, hidden_sizes=(32,)
    )
    torch.set_num_threads(1)
    ls.train(config, folder / "run", quiet=True, diagnostics=False, report=False)
    return folder / "run", images


def run_script(*args: object) -> str:
    """docs/examples/decode_onnx.py in a new process where importing torch or latentspace fails."""
    block = (
        "import runpy, sys; sys.modules.update(torch=None, latentspace=None); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    command = [sys.executable, "-c", block, str(SCRIPT), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_export_a_run_then_decode_it_without_latentspace_or_torch(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, npz = tmp_path / "run", trained[1]
    shutil.copytree(trained[0], run)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "run-onnx"  # the default: beside the run
    assert "encoder.onnx" in printed and "decoder.onnx" in printed
    assert "max |difference|" in printed and str(out) in printed
    manifest = json.loads((out / "manifest.json").read_text())
    weights = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["weights_sha256"] == weights and manifest["opset"] >= 13
    assert manifest["parts"]["decoder"]["output"]["range"] == [0.0, 1.0]

    codes = tmp_path / "codes.npz"
    assert main(["encode", str(run), str(npz), "--out", str(codes), "--limit", "7"]) == 0
    images = tmp_path / "images.npy"
    np.save(images, np.load(npz)["images"][:7])
    model = ls.load(run)
    pixels = torch.from_numpy(np.load(images))[:, None] / 255
    for source, expected in [
        (["--codes", codes], model.decode(torch.from_numpy(np.load(codes)["codes"]))),
        (["--images", images], model.reconstruct(pixels)),
    ]:
        grid, array = tmp_path / "grid.pgm", tmp_path / "decoded.npy"
        done = run_script(out, *source, "--out", grid, "--npy", array)
        assert "decoded 7 codes" in done
        assert grid.read_bytes().startswith(b"P5\n")
        assert np.abs(np.load(array) - expected.detach().numpy()).max() <= TOLERANCE


def test_a_gan_run_exports_its_generator_and_says_why_not_its_encoder(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ls.default_config(
        "gan", dataset=str(trained[1]), epochs=1, batch_size=16, latent_dim=2, hidden_sizes=(32,)
    )
    config = ls.apply_overrides(config, ["model.inversion_steps=1"])
    run = tmp_path / "gan"
    ls.train(config, run, quiet=True, diagnostics=False, report=False)
    out = tmp_path / "gan-onnx"
    out.mkdir()  # an empty folder is fine
    assert main(["export", str(run), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    said = [line for line in lines if "not exported" in line]
    assert len(said) == 1 and said[0].startswith("encoder: not exported: ")
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "manifest.json"]
    assert "decoded 5 codes" in run_script(out, "-n", "5", "--out", tmp_path / "samples.pgm")


# ---- hostile cases: one line each --------------------------------------------------------------
def one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("latentspace: error: ")
    return error


def test_a_missing_or_damaged_run_is_one_line(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = one_line_error(["export", str(tmp_path / "nothing"), "--format", "onnx"], capsys)
    assert "not found" in error
    damaged = tmp_path / "damaged"
    shutil.copytree(trained[0], damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    error = one_line_error(["export", str(damaged), "--out", str(tmp_path / "out")], capsys)
    assert "model.safetensors" in error
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_is_not_empty_is_one_line_and_untouched(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    error = one_line_error(["export", str(trained[0]), "--out", str(out)], capsys)
    assert str(out) in error and "not empty" in error
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    error = one_line_error(["export", str(trained[0]), "--out", str(out / "keep.txt")], capsys)
    assert "not a folder" in error


def test_an_unknown_format_is_an_argparse_choice_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path), "--format", "tflite"])
    assert exit_.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_onnx_names_the_extra(
    module: str,
    trained: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    error = one_line_error(["export", str(trained[0]), "--out", str(tmp_path / "out")], capsys)
    assert module in error and "pip install 'latentspace[export]'" in error
    assert not (tmp_path / "out").exists()
