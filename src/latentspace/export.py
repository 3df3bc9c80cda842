"""Exporting a run's encoder and decoder to ONNX, for use without latentspace or PyTorch.

What is exported is what a user of the run calls: the deterministic `model.encode` (a VAE's
posterior mean) and `model.decode` with the family's last step (the sigmoid onto images in
[0, 1]), never the raw networks. Each graph is run with onnxruntime on probe batches right after
export and refused when it differs from PyTorch by more than `TOLERANCE`. A manifest beside the
graphs says what a script needs: shapes, names, ranges, the family, the weights' SHA-256, opset.

    OUT/
      encoder.onnx   images (batch, C, H, W) in [0, 1] -> codes (batch, latent_dim)
      decoder.onnx   codes (batch, latent_dim) -> images (batch, C, H, W) in [0, 1]
      manifest.json

onnx and onnxruntime are the `export` extra, imported only here and only when exporting.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentspace._version import __version__
from latentspace.errors import LatentspaceError, StorageError
from latentspace.models import GenerativeModel
from latentspace.runs import WEIGHTS, file_sha256, open_run

__all__ = [
    "FORMATS",
    "MANIFEST",
    "OPSET",
    "PROBE_BATCHES",
    "TOLERANCE",
    "ExportError",
    "default_out",
    "export_model",
    "export_run",
    "why_no_encoder_graph",
]

FORMATS = ("onnx",)
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# 17 runs in every onnxruntime since 1.13 and in onnxruntime-web; nothing here needs a newer one
OPSET = 17
TOLERANCE = 1e-5  # the largest |onnxruntime - PyTorch| difference an exported graph may show
PROBE_BATCHES = (1, 5)  # two batch sizes: the batch dimension must really be dynamic
BATCH = "batch"  # the name of the dynamic dimension in the graphs and the manifest


class ExportError(LatentspaceError):
    """A model that cannot be exported, or an export that does not match PyTorch."""


def _onnx_modules() -> tuple[Any, Any]:
    """onnx and onnxruntime, or a one-line error naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        missing = error.name or "onnx or onnxruntime"
        raise ExportError(
            f"exporting to ONNX needs {missing}, which is not installed: "
            "pip install 'latentspace[export]'"
        ) from None
    return onnx, onnxruntime


# ---- what is exported ------------------------------------------------------------------------
class _Encode(nn.Module):
    """images (B, C, H, W) in [0, 1] -> codes (B, D): the model's deterministic `encode`."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)


class _Decode(nn.Module):
    """codes (B, D) -> images (B, C, H, W) in [0, 1]: the model's `decode`."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes)


def _probe_images(model: GenerativeModel, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, *model.image_shape, generator=generator)


def _probe_codes(model: GenerativeModel, batch: int, generator: torch.Generator) -> torch.Tensor:
    # twice the prior's spread, so codes away from its centre are checked too
    return 2 * torch.randn(batch, model.latent_dim, generator=generator)


def why_no_encoder_graph(model: GenerativeModel) -> str | None:
    """None when `model.encode` is a function of the images that a graph can hold, else why not:
    the family declares it (`GenerativeModel.encode_is_network`). An encoder that is an
    optimisation (GAN inversion: gradient descent in latent space) returns codes it searched for,
    and a traced graph would hold one search's constants."""
    if not model.encode_is_network:
        return (
            f"this {model.name} model's encode is an optimisation (such as GAN inversion), "
            "not a network a graph can hold"
        )
    return None


# ---- one graph -------------------------------------------------------------------------------
@contextlib.contextmanager
def _native_stdout_discarded() -> Iterator[None]:
    """Discard what native code writes to file descriptor 1 in the block. When it cannot export
    a graph, torch's TorchScript exporter prints the whole graph there from C++, whatever
    `verbose` says (torch 2.13); its exception still comes back, as our one line."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export_graph(
    module: nn.Module, probe: torch.Tensor, path: Path, names: tuple[str, str]
) -> None:
    """Trace `module` on `probe` into the ONNX file `path`, its first dimension dynamic.

    torch's TorchScript exporter (`dynamo=False`), not the torch.export-based one: both export
    every family here and match PyTorch within 4e-7, but the dynamo exporter takes 1.6 s a
    graph (1.4 s of it rebuilding onnxscript's operator table on every call) against 0.05-0.2 s,
    prints progress and warnings from inside torch, and exists as `torch.onnx.export(...,
    dynamo=True)` only from torch 2.5 where latentspace supports 2.4. The TorchScript exporter is
    deprecated from torch 2.9; a trace that baked in a value (Python control flow on a tensor) is
    what `_check_graph` catches, on batch sizes other than the traced one."""
    input_name, output_name = names
    options: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the default from torch 2.9
    module.eval()  # the exporter restores the wrapper's mode afterwards: keep it eval
    with warnings.catch_warnings(), _native_stdout_discarded():
        # the deprecation notice of the TorchScript exporter, and TracerWarnings for the
        # shape checks of encode/decode (constants in the graph; the batch size is not)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (probe,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: BATCH}, output_name: {0: BATCH}},
            opset_version=OPSET,
            **options,
        )


def _check_graph(
    part: str,
    module: nn.Module,
    path: Path,
    names: tuple[str, str],
    probe: Callable[[int, torch.Generator], torch.Tensor],
) -> float:
    """The largest |onnxruntime - PyTorch| over probe batches of every size in PROBE_BATCHES;
    a one-line ExportError when the graph is malformed, gives another shape, or differs by more
    than TOLERANCE."""
    onnx, onnxruntime = _onnx_modules()
    try:
        onnx.checker.check_model(str(path))
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # its errors come back as our one line, not its log too
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnx and onnxruntime raise their own, undocumented classes
        raise ExportError(
            f"the exported {part} is not a valid ONNX graph: {_first_line(error)}"
        ) from None
    input_name, output_name = names
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in PROBE_BATCHES:
        x = probe(batch, generator)
        with torch.no_grad():
            expected = module(x).numpy()
        try:
            (got,) = session.run([output_name], {input_name: x.numpy()})
        except Exception as error:  # onnxruntime's own classes again
            raise ExportError(
                f"onnxruntime cannot run the exported {part} on a batch of {batch} (the trace "
                f"fixed a size it should not have?): {_first_line(error)}"
            ) from None
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported {part} gives shape {tuple(got.shape)} for a batch of {batch}, "
                f"PyTorch {tuple(expected.shape)}: the trace fixed a size it should not have"
            )
        difference = float(np.max(np.abs(got.astype(np.float64) - expected)))
        if not difference <= TOLERANCE:  # NaN fails this too
            raise ExportError(
                f"the exported {part} differs from PyTorch by {difference:.3g} (more than "
                f"{TOLERANCE:g}) on a batch of {batch}; nothing was written"
            )
        worst = max(worst, difference)
    return worst


def _first_line(error: Exception, limit: int = 300) -> str:
    """The start of an error's message: onnxruntime's run to a kilobyte on one line."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---- the folder ------------------------------------------------------------------------------
def default_out(run_dir: Path) -> Path:
    """Where `export` writes when given no --out: a folder beside the run, `NAME-onnx`."""
    return run_dir.parent / f"{run_dir.resolve().name}-onnx"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: give --out a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(
            f"{out} exists and is not empty: give --out a new or empty folder, or remove it"
        )


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` that becomes `out` when the block succeeds; on any error
    it is removed, so a failed export leaves nothing behind."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as error:
        raise StorageError(f"cannot write {out}: {error.strerror or error}") from None
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; give a plain mkdir's mode
        if out.is_dir():
            out.rmdir()  # empty, checked before exporting
        os.replace(staging, out)
    except OSError as error:
        raise StorageError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tensor_spec(name: str, shape: tuple[int, ...], value_range: list[float] | None) -> dict:
    return {
        "name": name,
        "shape": [BATCH, *shape],
        "dtype": "float32",
        "range": value_range,  # None: any real number
    }


@dataclasses.dataclass(frozen=True)
class _Part:
    """One graph to export: its name, the module that computes it, what goes in and out."""

    name: str
    module: nn.Module
    input: dict[str, Any]
    output: dict[str, Any]
    probe: Callable[[GenerativeModel, int, torch.Generator], torch.Tensor]


def _parts(model: GenerativeModel) -> tuple[list[_Part], dict[str, str]]:
    """The parts of `model` to export, and the ones that cannot be, with the reason."""
    codes = _tensor_spec("codes", (model.latent_dim,), None)
    images = _tensor_spec("images", tuple(model.image_shape), [0.0, 1.0])
    parts, not_exported = [], {}
    why_not = why_no_encoder_graph(model)
    if why_not is None:
        parts.append(_Part("encoder", _Encode(model), images, codes, _probe_images))
    else:
        not_exported["encoder"] = why_not
    parts.append(_Part("decoder", _Decode(model), codes, images, _probe_codes))
    return parts, not_exported


def _export_part(model: GenerativeModel, part: _Part, folder: Path) -> dict[str, Any]:
    """Export and check one part into `folder`; its manifest entry."""
    path = folder / f"{part.name}.onnx"
    names = (part.input["name"], part.output["name"])
    try:
        _export_graph(
            part.module, part.probe(model, 2, torch.Generator().manual_seed(1)), path, names
        )
    except OSError:
        raise
    except Exception as error:  # torch's exporter raises many kinds (unsupported operators, ...)
        raise ExportError(f"torch cannot export the {part.name}: {_first_line(error)}") from error
    difference = _check_graph(
        part.name, part.module, path, names, lambda batch, g: part.probe(model, batch, g)
    )
    return {
        "file": path.name,
        "input": part.input,
        "output": part.output,
        "sha256": file_sha256(path),
        "max_abs_difference": difference,
    }


def export_model(
    model: GenerativeModel,
    out: str | Path,
    *,
    run: str | None = None,
    weights_sha256: str | None = None,
) -> dict[str, Any]:
    """Export `model`'s encoder (where `encode` is a network) and decoder to ONNX files in the
    new or empty folder `out`, check each against PyTorch, and write the manifest; returns it.
    `run` and `weights_sha256` go into the manifest as they are (`export_run` gives them).
    Nothing is left in `out` when a part fails its check."""
    _onnx_modules()  # before any work: the one-line error naming the extra
    if model.inputs != "images":
        raise ExportError(
            f"a {model.name} model reads {model.inputs}: ONNX export covers image models only"
        )
    out = Path(out)
    _check_out(out)
    # a copy on the CPU: the caller's model keeps its device and mode, and a check that runs
    # `encode` (an inversion keeps its last error) changes nothing of theirs
    model = copy.deepcopy(model).cpu().eval()
    parts, not_exported = _parts(model)
    with _staging(out) as staging:
        exported = {part.name: _export_part(model, part, staging) for part in parts}
        manifest = {
            "format": "latentspace-onnx",
            "format_version": MANIFEST_VERSION,
            "family": model.name,
            "latent_dim": model.latent_dim,
            "image_shape": list(model.image_shape),
            "layout": "NCHW",
            "opset": OPSET,
            "run": run,
            "weights_sha256": weights_sha256,
            "parts": exported,
            "not_exported": not_exported,
            "checked": {
                "against": f"PyTorch {torch.__version__}",
                "batch_sizes": list(PROBE_BATCHES),
                "tolerance": TOLERANCE,
            },
            "latentspace_version": __version__,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Export the run in `run_dir` (see `export_model`) to `out`, by default `default_out`;
    the manifest records the run and the SHA-256 of its model.safetensors (the same hash
    `latentspace encode` writes into a codes file)."""
    run_dir = Path(run_dir)
    out = default_out(run_dir) if out is None else Path(out)
    _onnx_modules()
    _check_out(out)  # before loading: a one-line error, whatever the run holds
    opened = open_run(run_dir, "cpu")
    weights = file_sha256(opened.path / WEIGHTS)
    return export_model(opened.model, out, run=str(opened.path), weights_sha256=weights)
