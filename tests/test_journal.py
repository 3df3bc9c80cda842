"""The journal: albums compressed by a learned codec round-trip bit-exactly (in a new process, on
other threads), keep their images' names, and every hostile album is one line and a non-zero
exit, with every undamaged image still written."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from PIL import Image

import latentspace as ls
from conftest import make_images
from latentspace.cli import main
from latentspace.errors import ConfigError, DataError
from latentspace.journal import FORMAT_VERSION, AlbumError, container, decode_album, encode_album
from latentspace.journal.coding import SymbolCoder
from latentspace.journal.container import MAGIC, Album, Entry, Stream, pack, unpack
from latentspace.models import MODELS, build_model
from latentspace.models.entropy import (
    PRECISION,
    SATURATION,
    ChannelContextPrior,
    StepQuantiser,
    integer_frequencies,
)
from latentspace.models.fsq import PRIOR_LR_FACTOR
from latentspace.models.spatial import FACTORS, UPSAMPLES, SpatialDecoder
from latentspace.runs import WEIGHTS, weights_sha256

CODEC = next(name for name, cls in MODELS.items() if hasattr(cls, "to_symbols"))


def _train(out: Path, data: Path) -> Path:
    config = ls.default_config(
        CODEC, dataset=str(data), epochs=12, batch_size=16, latent_dim=2, device="cpu"
    )
    overrides = ["model.width=8", "model.levels=7", "model.lambdas=0.05,0.005", "train.lr=0.005"]
    ls.train(
        ls.apply_overrides(config, overrides), out, quiet=True, report=False, diagnostics=False
    )
    return out


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A codec trained 2 epochs on 64 generated 16x16 images (about a second)."""
    folder = tmp_path_factory.mktemp("codec")
    np.savez(folder / "tiny.npz", images=make_images(64, size=16))
    return _train(folder / "run", folder / "tiny.npz")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five pictures of the training size, one of another size, one in a sub-folder."""
    folder = tmp_path_factory.mktemp("pictures")
    for i, image in enumerate(make_images(5, size=16, seed=3)):
        Image.fromarray(image).save(folder / f"pic{i}.png")
    Image.fromarray(make_images(1, size=23, seed=4)[0]).save(folder / "odd size.png")
    (folder / "inner").mkdir()
    Image.fromarray(make_images(1, size=16, seed=5)[0]).save(folder / "inner" / "deep.jpg")
    return folder


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {
        p.relative_to(folder).as_posix(): np.asarray(Image.open(p))
        for p in sorted(folder.rglob("*.png"))
    }


def _one_line(capsys: pytest.CaptureFixture[str], *parts: str) -> str:
    error = capsys.readouterr().err.strip()
    assert "\n" not in error, error
    for part in parts:
        assert part in error, f"{part!r} not in {error!r}"
    return error


# ---- the model's side: rate, tables ---------------------------------------------------------------
def _above(plane: torch.Tensor | np.ndarray, y: int, x: int, levels: int) -> int:
    """The oracle's own index of the up-left, up and up-right symbols (1 + symbol, 0 outside)."""
    width = plane.shape[1]
    digits = [
        int(plane[y - 1, b]) + 1 if y >= 1 and 0 <= b < width else 0 for b in (x - 1, x, x + 1)
    ]
    return digits[0] + (levels + 1) * digits[1] + (levels + 1) ** 2 * digits[2]


@pytest.mark.parametrize(
    ("context", "spatial"),
    [(0, "none"), (1, "none"), (2, "none"), (0, "above"), (2, "above")],
)
def test_rate_is_the_code_length_under_the_prior_and_reaches_the_encoder(
    context: int, spatial: str
) -> None:
    """Oracle: the rate is -sum log2 p(symbol | context) under torch.distributions.Categorical,
    the context of channel c's symbol at a position being the symbols of the channels before it
    there and, with the row above, the up-left, up and up-right symbols in channel c; its gradient reaches the continuous coordinates (the
    encoder) and the logits."""
    torch.manual_seed(0)
    levels = 5
    prior = ChannelContextPrior(
        qualities=2, channels=3, levels=levels, context=context, spatial=spatial
    )
    with torch.no_grad():
        prior.logits.normal_()
    coordinate = (torch.rand(4, 3, 3, 4) * (levels - 1)).requires_grad_()
    symbols = coordinate.detach().round().long()
    quality = torch.tensor([0, 1, 0, 1])
    rate = prior.rate(coordinate, symbols, quality)
    expected = torch.zeros(4)
    for i, q in enumerate(quality.tolist()):
        for c, y, x in itertools.product(range(3), range(3), range(4)):
            previous = [int(symbols[i, c - j, y, x]) for j in range(1, context + 1) if c >= j]
            row = sum(s * levels**power for power, s in enumerate(previous))
            if spatial == "above":
                row += levels**context * _above(symbols[i, c], y, x, levels)
            logits = prior.logits[q, c, row]
            log_p = torch.distributions.Categorical(logits=logits).log_prob(symbols[i, c, y, x])
            expected[i] -= log_p / math.log(2)
    assert torch.allclose(rate, expected, atol=1e-4)
    rate.sum().backward()
    assert coordinate.grad is not None and bool(coordinate.grad.abs().sum() > 0)
    assert prior.logits.grad is not None and bool(prior.logits.grad.abs().sum() > 0)


def test_the_rates_gradient_to_the_encoder_is_the_slope_between_the_two_symbols() -> None:
    """Oracle: d rate / d coordinate at each position is the code length of the symbol above the
    continuous value less that of the symbol below it, under the position's own quality and
    context (the flat-index lookup must find the same rows as the table does)."""
    torch.manual_seed(1)
    levels = 5
    prior = ChannelContextPrior(qualities=3, channels=3, levels=levels, context=2)
    with torch.no_grad():
        prior.logits.normal_()
    coordinate = (torch.rand(3, 3, 2, 2) * (levels - 1)).requires_grad_()
    symbols = coordinate.detach().round().long()
    quality = torch.tensor([2, 0, 1])
    prior.rate(coordinate, symbols, quality).sum().backward()
    assert coordinate.grad is not None
    bits = -torch.log_softmax(prior.logits.detach(), -1) / math.log(2)
    for i, c, y, x in itertools.product(range(3), range(3), range(2), range(2)):
        previous = [int(symbols[i, c - j, y, x]) for j in (1, 2) if c >= j]
        row = bits[int(quality[i]), c, sum(s * levels**p for p, s in enumerate(previous))]
        below = min(int(coordinate[i, c, y, x].floor()), levels - 2)
        slope = row[below + 1] - row[below]
        assert torch.isclose(coordinate.grad[i, c, y, x], slope, atol=1e-5), (i, c, y, x)


@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_both_decoders_give_the_images_size_and_subpixel_never_works_at_full_size(
    upsample: str,
) -> None:
    """Any code map decodes to factor x its size; the sub-pixel decoder's only full-size tensor
    is its output (the cost it removes), the transposed one's hidden layers are full size."""
    for factor in FACTORS:
        decoder = SpatialDecoder(3, 3, factor, 8, upsample=upsample)
        h, full = torch.rand(2, 3, 3, 5), []
        for layer in decoder.layers:
            h = layer(h)
            if h.shape[2] == 3 * factor:
                full.append(h.shape[1])  # channels of a full-size tensor
        assert h.shape == (2, 3, 3 * factor, 5 * factor)
        assert (max(full) == 3) == (upsample == "subpixel"), full
    with pytest.raises(ConfigError, match="upsample"):
        ls.apply_overrides(ls.default_config(CODEC), ["model.upsample=bilinear"])


def test_a_run_saved_before_upsample_existed_loads_with_the_decoder_it_trained(
    tmp_path: Path,
) -> None:
    np.savez(tmp_path / "tiny.npz", images=make_images(16, size=16))
    config = ls.default_config(CODEC, dataset=str(tmp_path / "tiny.npz"), epochs=1, device="cpu")
    config = ls.apply_overrides(config, ["model.width=8", "model.upsample=transposed"])
    run = ls.train(config, tmp_path / "run", quiet=True, report=False, diagnostics=False)
    path = tmp_path / "run" / "config.json"
    document = json.loads(path.read_text())
    del document["config"]["model"]["upsample"]  # as written before the setting existed
    path.write_text(json.dumps(document))
    loaded = ls.open_run(tmp_path / "run")
    assert loaded.config.model.upsample == "transposed"
    for (name, value), saved in zip(
        loaded.model.state_dict().items(), run.model.state_dict().values(), strict=True
    ):
        assert torch.equal(value, saved), name


def test_a_run_saved_before_the_row_above_context_existed_still_decodes_its_albums(
    tmp_path: Path,
) -> None:
    """Such a run coded with two channels of context and no spatial one: it loads with those,
    and an album it made before decodes to the same pixels."""
    np.savez(tmp_path / "tiny.npz", images=make_images(8, size=16))
    config = ls.default_config(CODEC, dataset=str(tmp_path / "tiny.npz"), epochs=1, device="cpu")
    config = ls.apply_overrides(
        config, ["model.width=8", "model.context=2", "model.spatial_context=none"]
    )
    run = ls.train(config, tmp_path / "run", quiet=True, report=False, diagnostics=False)
    images = [torch.from_numpy(i)[None] for i in make_images(3, size=16, seed=2)]
    weights = weights_sha256(tmp_path / "run")
    album = encode_album(run.model, images, 2, weights=weights)
    before = decode_album(album, run.model, weights=weights, name="album").images
    path = tmp_path / "run" / "config.json"
    document = json.loads(path.read_text())
    del document["config"]["model"]["spatial_context"]  # as written before the setting existed
    path.write_text(json.dumps(document))
    loaded = ls.open_run(tmp_path / "run")
    assert loaded.model.spatial_context == "none" and loaded.model.context_channels == 2
    after = decode_album(album, loaded.model, weights=weights, name="album").images
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_overshoot_pulls_only_saturated_codes_back() -> None:
    """Regression (photo crops, lr 3e-4..2e-3): the encoder's output ran to std 30-4000 with
    every symbol at an end. The overshoot is 0 while |gain y| <= SATURATION, (|gain y| - S)^2
    beyond it, and its gradient points back towards the range."""
    quantiser = StepQuantiser(qualities=2, channels=2, levels=9)
    gain = float(quantiser.log_gain.detach().exp()[0])
    inside = torch.full((1, 2, 2, 2), 0.9 * SATURATION / gain)
    assert quantiser.overshoot(inside).tolist() == [0.0]
    y = torch.tensor([[[[2.0]], [[-2.0]]]]) * SATURATION / gain
    y.requires_grad_()
    penalty = quantiser.overshoot(y)
    assert penalty.item() == pytest.approx(2 * SATURATION**2, rel=1e-5)
    penalty.sum().backward()
    assert y.grad is not None and y.grad[0, 0].item() > 0 > y.grad[0, 1].item()


def test_the_entropy_model_learns_faster_than_the_networks() -> None:
    """Every parameter is optimised once; the prior's logits at PRIOR_LR_FACTOR x train.lr."""
    config = ls.apply_overrides(ls.default_config(CODEC, device="cpu"), ["train.lr=0.002"])
    model = build_model(config.model, (3, 16, 16), config.train)
    (optimizer,) = model.configure_optimizers()
    groups = optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    prior = next(g for g in groups if any(p is model.prior.logits for p in g["params"]))
    assert prior["lr"] == pytest.approx(0.002 * PRIOR_LR_FACTOR)
    assert all(g["lr"] == pytest.approx(0.002) for g in groups if g is not prior)


@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (2, 3, 40, 33)])
def test_ssim_is_torchmetrics_ssim_values_and_gradients(shape: tuple[int, ...]) -> None:
    """models.likelihood.ssim (a separable window) against torchmetrics' (one 2-D window)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    from latentspace.models.likelihood import ssim

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    noisy = (x + 0.2 * torch.randn(shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    ours_in, theirs_in = noisy.clone().requires_grad_(), noisy.clone().requires_grad_()
    ours = ssim(ours_in, x)
    theirs = structural_similarity_index_measure(theirs_in, x, data_range=1.0, reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    (ours * torch.arange(1.0, len(x) + 1, dtype=torch.float64)).sum().backward()
    (theirs * torch.arange(1.0, len(x) + 1, dtype=torch.float64)).sum().backward()
    assert ours_in.grad is not None and theirs_in.grad is not None
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-8, atol=1e-12)
    assert 0.0 < float(ours.detach().min()) < float(ours.detach().max()) < 1.0


def test_uniform_window_ssim_is_scikit_images_default() -> None:
    """ssim(window="uniform") against skimage's structural_similarity with no options (the
    measure bench/journal.py scores Fashion-MNIST with), on 8-bit images; and it has gradients."""
    from skimage.metrics import structural_similarity

    from latentspace.models.likelihood import ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 28, 31)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
    theirs = [structural_similarity(p, q, data_range=255) for p, q in zip(b, a, strict=True)]
    noisy = torch.from_numpy(b[:, None] / 255.0).requires_grad_()
    ours = ssim(noisy, torch.from_numpy(a[:, None] / 255.0), "uniform")
    np.testing.assert_allclose(ours.detach().numpy(), theirs, rtol=1e-9)
    assert len(set(np.round(theirs, 6))) == 3, "three different scores, not one repeated"
    ours.sum().backward()
    assert noisy.grad is not None and float(noisy.grad.abs().sum()) > 0
    with pytest.raises(DataError, match="smaller than SSIM's 7x7 window"):
        ssim(torch.rand(1, 1, 6, 20), torch.rand(1, 1, 6, 20), "uniform")
    with pytest.raises(ConfigError, match="'box' is not one of: gaussian, uniform"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), "box")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.distortion=psnr", "model.distortion = 'psnr' is not one of: mse, ssim, ms-ssim"),
        ("model.ssim_window=box", "model.ssim_window = 'box' is not one of: gaussian, uniform"),
        ("model.lambdas=0.01,0.02", "must decrease"),
        ("model.spatial_context=left", "model.spatial_context = 'left' is not one of: above, none"),
        ("model.context=2", "makes 81000 contexts: give context 0 to 3 and at most 10000"),
    ],
)
def test_codec_settings_are_refused_in_one_line(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ls.apply_overrides(ls.default_config(CODEC, device="cpu"), [setting])


def test_integer_tables_are_positive_and_sum_to_the_precision() -> None:
    logits = torch.tensor([[0.0, 50.0, -50.0, 1.0, 2.0], [0.0] * 5])
    table = integer_frequencies(logits)
    assert table.dtype == torch.int32 and bool((table >= 1).all())
    assert table.sum(-1).tolist() == [2**PRECISION] * 2
    assert table[0, 2] == 1 and table[0, 1] > 60_000, "a near-impossible symbol keeps 1"


def test_the_saved_tables_are_those_that_code(codec_run: Path) -> None:
    model = ls.load(codec_run)
    saved = safetensors.torch.load_file(str(codec_run / WEIGHTS))
    tables = [v for k, v in saved.items() if v.dtype == torch.int32]
    assert len(tables) == 1, "one integer table tensor in the weights file"
    for quality in (1, 2):
        assert np.array_equal(model.frequency_table(quality), tables[0][quality - 1].numpy())


def test_payload_is_close_to_the_ideal_code_length(codec_run: Path) -> None:
    model = ls.load(codec_run)
    table = model.frequency_table(2)  # (C, contexts, A)
    channels, levels = table.shape[0], table.shape[-1]
    symbols = np.random.default_rng(0).integers(0, levels, size=(channels, 5, 7))
    assert model.spatial_context == "above", "the default codes with its neighbours"
    coder = SymbolCoder(table, model.context_channels, model.spatial_context)
    payload = coder.encode(symbols)
    contexts = model.prior.contexts(torch.from_numpy(symbols)[None])[0].numpy()
    ideal = -np.log2(table[np.arange(channels)[:, None, None], contexts, symbols] / 2**PRECISION)
    assert len(payload) * 8 <= ideal.sum() + 40, "ANS costs at most about a word over the ideal"
    assert np.array_equal(coder.decode(payload, symbols.shape), symbols)


@pytest.mark.parametrize("spatial", ["none", "above"])
@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 1, 5), (2, 4, 3), (3, 5, 7)])
def test_the_coder_codes_each_symbol_in_its_context(
    spatial: str, shape: tuple[int, int, int]
) -> None:
    """Oracle: with peaked tables (each context's row favours its own symbol), symbols drawn
    position by position from the row of their context (computed here by hand) code to within
    a word of -sum log2 p, and decode back, alone and among other images. A coder that reads
    another row for some symbols pays bits for them, one that decodes in another order than it
    encodes gives other symbols."""
    rng = np.random.default_rng(7)
    levels, context = 5, 1
    rows = levels**context * ((levels + 1) ** 3 if spatial == "above" else 1)
    table = rng.integers(1, 40, size=(shape[0], rows, levels))
    # about 0.6 on the favoured symbol: peaked enough that a wrong row costs bits, and not so
    # peaked that symbols decoded in the wrong order would come out right all the same
    table[:, np.arange(rows), rng.integers(0, levels, size=rows)] += 150
    table = (table * 2**PRECISION) // table.sum(-1, keepdims=True)
    table[..., 0] += 2**PRECISION - table.sum(-1)
    probabilities = table / 2**PRECISION
    coder = SymbolCoder(table, context, spatial)
    maps, payloads, ideals = [], [], []
    for _ in range(3):
        symbols = np.zeros(shape, dtype=np.int64)
        ideal = 0.0
        for c, y, x in itertools.product(*map(range, shape)):
            row = int(symbols[c - 1, y, x]) if c >= 1 else 0
            if spatial == "above":
                row += levels * _above(symbols[c], y, x, levels)
            symbols[c, y, x] = rng.choice(levels, p=probabilities[c, row])
            ideal -= math.log2(probabilities[c, row, symbols[c, y, x]])
        payload = coder.encode(symbols)
        assert len(payload) * 8 <= ideal + 40
        decoded = coder.decode(payload, shape)
        assert decoded is not None and np.array_equal(decoded, symbols)
        maps.append(symbols)
        payloads.append(payload)
        ideals.append(ideal)
    assert coder.encode_many(np.stack(maps)) == [(1, p) for p in payloads]
    together = coder.decode_many([payloads[0], payloads[1][:-1] + b"\xff", payloads[2]], shape)
    assert np.array_equal(together[0], maps[0]) and np.array_equal(together[2], maps[2])
    assert together[1] is None or not np.array_equal(together[1], maps[1])
    # one stream for all three images, within a word of their ideal length together (three
    # streams may pay a word each), decoded beside a stream of one
    [(count, shared)] = coder.encode_many(np.stack(maps), group_bytes=10**6)
    assert count == 3 and len(shared) * 8 <= sum(ideals) + 40
    mixed = coder.decode_many([shared, payloads[0]], shape, [3, 1])
    assert all(np.array_equal(a, b) for a, b in zip(mixed, [*maps, maps[0]], strict=True))


def test_the_row_above_context_needs_its_spatial_setting_to_decode() -> None:
    """The same payload read without the neighbours' context does not give the symbols back:
    the album must take the setting from the model, not a default."""
    rng = np.random.default_rng(3)
    table = rng.integers(1, 2**10, size=(2, 5 * 6**3, 5))
    table = (table * 2**PRECISION) // table.sum(-1, keepdims=True)
    table[..., 0] += 2**PRECISION - table.sum(-1)
    symbols = rng.integers(0, 5, size=(2, 6, 6))
    payload = SymbolCoder(table, 1, "above").encode(symbols)
    other = SymbolCoder(table[:, :5], 1, "none").decode(payload, symbols.shape)
    assert other is None or not np.array_equal(other, symbols)


# ---- round trips -------------------------------------------------------------------------------
def test_round_trip_is_bit_exact_in_a_new_process_on_other_threads(
    codec_run: Path, pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    album = tmp_path / "album.lsj"
    assert main(["compress", str(codec_run), str(pictures), "--out", str(album)]) == 0
    assert "compressed 7 images" in capsys.readouterr().out
    here = tmp_path / "here"
    assert main(["decompress", str(album), "--out", str(here), "--threads", "1"]) == 0
    there = tmp_path / "there"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "latentspace",
            "decompress",
            str(album),
            "--out",
            str(there),
            "--threads",
            "2",
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    mine, theirs = _pixels(here), _pixels(there)
    assert sorted(mine) == ["inner/deep.png", "odd size.png", *[f"pic{i}.png" for i in range(5)]]
    assert all(np.array_equal(mine[k], theirs[k]) for k in mine), "the same pixels"
    assert mine["odd size.png"].shape == (23, 23), "an image of another size keeps its size"
    original = np.asarray(Image.open(pictures / "pic0.png")).astype(float)
    assert np.abs(mine["pic0.png"] - original).mean() < 40, "a recognisable picture comes back"


def test_python_api_and_quality_levels(codec_run: Path, pictures: Path, tmp_path: Path) -> None:
    low = ls.compress(codec_run, [pictures], tmp_path / "low.lsj", quality=1)
    high = ls.compress(codec_run, [pictures], tmp_path / "high.lsj", quality=2)
    assert (low.quality, high.quality) == (1, 2) and low.images == 7
    assert low.payload_bytes < low.bytes == (tmp_path / "low.lsj").stat().st_size
    # --bytes: the highest quality within the budget; none within it is an error
    budget = ls.compress(codec_run, [pictures], tmp_path / "b.lsj", bytes_per_image=low.bytes / 7)
    assert budget.quality == (2 if high.bytes <= low.bytes else 1)
    with pytest.raises(ls.LatentspaceError, match="even quality 1 takes"):
        ls.compress(codec_run, [pictures], tmp_path / "none.lsj", bytes_per_image=1)
    written = ls.decompress(tmp_path / "low.lsj", tmp_path / "out")
    assert len(written) == 7 and all(p.exists() for p in written)


# ---- hostile albums ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def album_bytes(codec_run: Path, pictures: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("album") / "album.lsj"
    ls.compress(codec_run, [pictures], path)
    return path.read_bytes()


def _other_weights(run: Path, out: Path) -> Path:
    """A copy of `run` with one weight changed: another model of the same shape."""
    shutil.copytree(run, out)
    with safetensors.safe_open(str(out / WEIGHTS), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = safetensors.torch.load_file(str(out / WEIGHTS))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1e-3
    safetensors.torch.save_file(tensors, str(out / WEIGHTS), metadata=metadata)
    return out


def _decompress(data: bytes, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    album, out = tmp_path / "bad.lsj", tmp_path / "out"
    album.write_bytes(data)
    return main(["decompress", str(album), "--out", str(out), *extra]), out


def test_a_truncated_album_names_the_cut_image_and_writes_the_others(
    album_bytes: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _decompress(album_bytes[:-3], tmp_path)
    assert code == 1
    _one_line(capsys, "image 7 (pic4.png) is truncated", "the other 6 images were written")
    assert len(_pixels(out)) == 6
    code, _ = _decompress(album_bytes[:30], tmp_path)
    assert code == 1
    _one_line(capsys, "bad.lsj is truncated")


def test_flipped_bits_name_the_damaged_image(
    codec_run: Path, album_bytes: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    album = unpack(album_bytes, "album")
    first_payload = len(album_bytes) - album.payload_bytes
    damaged = bytearray(album_bytes)
    damaged[first_payload] ^= 0x10  # inside image 1's payload
    code, out = _decompress(bytes(damaged), tmp_path)
    assert code == 1
    _one_line(capsys, "image 1 (inner/deep.jpg) is damaged", "the other 6 images were written")
    assert len(_pixels(out)) == 6
    damaged = bytearray(album_bytes)
    damaged[first_payload - 1] ^= 0x01  # inside the index
    assert _decompress(bytes(damaged), tmp_path)[0] == 1
    _one_line(capsys, "its header or index is damaged")


def test_a_wrong_model_a_future_version_and_no_codec_are_refused(
    codec_run: Path,
    album_bytes: bytes,
    tmp_path: Path,
    tiny_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = _other_weights(codec_run, tmp_path / "other")
    code, _ = _decompress(album_bytes, tmp_path, "--run", str(other))
    assert code == 1
    _one_line(capsys, weights_sha256(codec_run), weights_sha256(other))
    future = bytearray(album_bytes)
    future[len(MAGIC)] = FORMAT_VERSION + 1
    assert _decompress(bytes(future), tmp_path)[0] == 1
    _one_line(capsys, f"format version {FORMAT_VERSION + 1}", "upgrade latentspace")
    assert _decompress(b"PK\x03\x04 not an album", tmp_path)[0] == 1
    _one_line(capsys, "not a latentspace album")
    assert main(["compress", str(tiny_run), str(tmp_path), "--out", "x.lsj"]) == 1
    _one_line(capsys, "no entropy model to compress with", CODEC)


def test_images_beyond_the_models_limits_and_unsafe_names(
    codec_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "huge.png"
    Image.new("L", (8200, 4)).save(huge)
    assert main(["compress", str(codec_run), str(huge), "--out", str(tmp_path / "h.lsj")]) == 1
    _one_line(capsys, "8200", "larger than this model codes")
    model = ls.load(codec_run)
    weights = weights_sha256(codec_run)
    good = encode_album(
        model,
        [torch.from_numpy(make_images(1, size=16)[:, None][0])],
        2,
        weights=weights,
        run_path=str(codec_run),
        names=["fine.png"],
    )
    read = unpack(good, "good")
    entry, payload = read.entries[0], read.streams[0].payload
    hostile = Album(
        weights,
        2,
        1,
        str(codec_run),
        [entry, Entry(100_000, 5, "vast.png"), Entry(16, 16, "../escape.png")],
        [Stream((i,), payload) for i in range(3)],
    )
    code, out = _decompress(pack(hostile), tmp_path)
    assert code == 1
    _one_line(capsys, "image 2 (vast.png)", "100000x5", "image 3 has an unsafe name")
    assert [p.name for p in out.rglob("*.png")] == ["fine.png"]
    assert not (tmp_path / "escape.png").exists()


def test_decode_album_keeps_names_and_reports_problems_in_memory(codec_run: Path) -> None:
    model = ls.load(codec_run)
    weights = weights_sha256(codec_run)
    images = [torch.from_numpy(a[None]) for a in make_images(3, size=16, seed=7)]
    data = encode_album(model, images, 1, weights=weights, names=["a.png", "b.png", "c.png"])
    decoded = decode_album(data, model, weights=weights, name="mem")
    assert decoded.names == ["a.png", "b.png", "c.png"] and not decoded.problems
    assert all(i is not None and i.shape == (1, 16, 16) for i in decoded.images)
    cut = decode_album(data[:-1], model, weights=weights, name="mem")
    assert list(cut.problems) == [2] and cut.images[2] is None and cut.images[0] is not None
    with pytest.raises(AlbumError, match="SHA-256"):
        decode_album(data, model, weights="0" * 64, name="mem")
    assert struct.unpack("<B", data[4:5])[0] == 1, "images alone in their streams: version 1"


def test_images_sharing_streams_decode_alike_in_fewer_bytes(
    codec_run: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """group_bytes: images of a size share streams (format version 2) and decode to the same
    pixels as alone, in fewer bytes; a damaged stream names each of its images and the other
    streams still decode; an index whose streams do not hold its images is refused."""
    model = ls.load(codec_run)
    weights = weights_sha256(codec_run)
    small = [torch.from_numpy(a[None]) for a in make_images(9, size=16, seed=3)]
    large = [torch.from_numpy(a[None]) for a in make_images(2, size=20, seed=4)]
    images = [*small[:4], large[0], *small[4:], large[1]]  # sizes interleaved
    names = [f"{i}.png" for i in range(len(images))]
    alone = encode_album(model, images, 2, weights=weights, names=names)
    each = decode_album(alone, model, weights=weights, name="alone")
    sizes = unpack(alone, "alone").payload_bytes / len(images)
    shared = encode_album(
        model, images, 2, weights=weights, names=names, group_bytes=int(3 * sizes)
    )
    album = unpack(shared, "shared")
    assert album.version == FORMAT_VERSION == 2 and len(shared) < len(alone)
    assert 1 < len(album.streams) < len(images)
    assert {len({images[i].shape for i in s.members}) for s in album.streams} == {1}
    decoded = decode_album(shared, model, weights=weights, name="shared")
    assert not decoded.problems and decoded.names == names
    assert all(np.array_equal(a, b) for a, b in zip(decoded.images, each.images, strict=True))
    # flip a bit in the first stream: its images are named, all the others decode
    damaged = bytearray(shared)
    damaged[len(shared) - album.payload_bytes] ^= 0x04
    hurt = decode_album(bytes(damaged), model, weights=weights, name="hurt")
    first = album.streams[0].members
    assert sorted(hurt.problems) == sorted(first)
    assert f"as is the stream of {len(first)} images" in hurt.problems[first[0]]
    assert all((image is None) == (i in first) for i, image in enumerate(hurt.images))
    # hostile indexes (written by a packer made to accept them): streams that leave an image
    # out, or mix sizes, are refused in one line before anything is decoded
    fewer = dataclasses.replace(album, streams=album.streams[:-1])
    with pytest.raises(ValueError, match="size by size"):
        pack(fewer)
    mixed = dataclasses.replace(album, streams=[Stream(tuple(range(len(images))), b"x")])
    for hostile, why in ((fewer, "do not hold its images"), (mixed, "do not fit")):
        monkeypatch.setattr(
            container, "size_order", lambda _, h=hostile: [i for s in h.streams for i in s.members]
        )
        data = pack(hostile)
        monkeypatch.undo()
        with pytest.raises(AlbumError, match=why):
            unpack(data, "hostile")
    # the CLI: --group-bytes, and a negative one refused
    pictures = tmp_path / "p"
    pictures.mkdir()
    for i, image in enumerate(small):
        Image.fromarray(image[0].numpy()).save(pictures / f"{i}.png")

    def compress(album: str, group: str) -> int:
        out = str(tmp_path / album)
        return main(
            ["compress", str(codec_run), str(pictures), "--out", out, "--group-bytes", group]
        )

    assert compress("a.lsj", "100000") == 0
    assert "compressed 9 images" in capsys.readouterr().out
    assert len(unpack((tmp_path / "a.lsj").read_bytes(), "a").streams) == 1
    assert main(["decompress", str(tmp_path / "a.lsj"), "--out", str(tmp_path / "out")]) == 0
    assert len(_pixels(tmp_path / "out")) == 9
    assert compress("b.lsj", "-1") == 1
    _one_line(capsys, "group bytes = -1")
