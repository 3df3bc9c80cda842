"""Hostile and unusual files (issue 24): sizes a file or a flag claims are checked before anything
is allocated, pixels are read as they are meant to be seen, and every skipped file is named."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from latentspace.cli import main
from latentspace.data import files as data_files
from latentspace.data import resolve
from latentspace.data.files import load_image
from latentspace.errors import ConfigError, DataError
from latentspace.settings import DataConfig, TrainConfig, validate_settings


def _write_grays(folder: Path, n: int, side: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((side, side), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A 4x4 PNG whose IHDR claims width x height (CRC fixed): a bomb in a few dozen bytes."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature + length
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # over type + IHDR data
    path.write_bytes(bytes(data))


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("width", "height", "told"),
    [
        (30000, 30000, "900000000 pixels"),  # over twice Pillow's limit: Pillow raises
        (10000, 10000, "10000x10000 = 100000000 pixels"),  # Pillow only warns
        (9000, 8000, "9000x8000 = 72000000 pixels"),  # Pillow silent; over latentspace's limit
    ],
)
def test_decompression_bomb_is_skipped_and_named(
    tmp_path: Path, width: int, height: int, told: str
) -> None:
    _write_grays(tmp_path, 3)
    _png_claiming(tmp_path / "bomb.png", width, height)
    with pytest.warns(UserWarning, match=rf"bomb\.png \({told}, more than the limit"):
        images = resolve(str(tmp_path))
    assert images.images.shape == (3, 1, 8, 8)
    with pytest.raises(DataError, match=rf"bomb\.png: {told}"):
        load_image(tmp_path / "bomb.png")


def test_decompression_bomb_under_strict_is_one_cli_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    _write_grays(folder, 3)
    _png_claiming(folder / "bomb.png", 30000, 30000)
    (folder / "notes.txt").write_text("not an image, and not an error: only named")
    argv = ["train", "--dataset", str(folder), "--strict", "--out", str(tmp_path / "run")]
    assert main([*argv, "--epochs", "1", "--quiet"]) == 1
    line = _one_error_line(capsys)
    assert "bomb.png (900000000 pixels" in line and "notes.txt" not in line


@pytest.mark.parametrize("size", [8000, 100000])
def test_size_over_4096_is_refused_before_loading(
    tmp_path: Path, size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=rf"data.size = {size} must be between 4 and 4096"):
        validate_settings(DataConfig(size=size), TrainConfig())
    # a dataset that does not exist: without the limit this fails on the dataset, allocating nothing
    missing = str(tmp_path / "no-such-folder")
    argv = ["train", "--dataset", missing, "--size", str(size), "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    assert f"data.size = {size}" in _one_error_line(capsys)


def test_folder_larger_than_memory_budget_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_grays(tmp_path, 3)
    monkeypatch.setattr(data_files, "memory_budget", lambda: 2**20)
    decoded: list[Path] = []
    monkeypatch.setattr(data_files, "_decode", lambda path: decoded.append(path))
    # 3 images x 1 channel x 1024 x 1024 = 3 MiB
    with pytest.raises(DataError, match=r"3 images in .* need 3\.0 MiB .* more than the 1\.0 MiB"):
        data_files.load_folder(tmp_path, size=1024)  # in memory; resolve() reads a disk cache
    assert decoded == []


def _header_claiming_73_gib() -> bytes:
    header = io.BytesIO()
    shape = (100000, 3, 256, 128)  # float64: 73.2 GiB
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return header.getvalue() + bytes(64)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_array_header_claiming_73_gib_is_one_line(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"huge{suffix}"
    if suffix == ".npy":
        path.write_bytes(_header_claiming_73_gib())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("images.npy", _header_claiming_73_gib())
    with pytest.raises(DataError, match=r"huge\.np.*claims .*73\.2 GiB.* damaged or truncated"):
        resolve(str(path))
    assert main(["train", "--dataset", str(path), "--out", str(tmp_path / "run")]) == 1
    assert f"huge{suffix}" in _one_error_line(capsys)


def test_array_larger_than_memory_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((4, 32, 32), dtype=np.float64))  # 32 KiB of data
    monkeypatch.setattr(data_files, "memory_budget", lambda: 2**10)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load ran before the check"))
    with pytest.raises(DataError, match=r"big\.npy holds \(4, 32, 32\) float64: .* more than"):
        resolve(str(path))


@pytest.mark.parametrize("suffix", [".png", ".pgm", ".tif"])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    wide = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(wide).save(folder / f"scan{suffix}")
    expected = np.rint(wide / 257)
    for images in (resolve(str(folder)).images[0], load_image(folder / f"scan{suffix}")):
        assert images.shape == (1, 32, 32)
        assert np.abs(images[0].numpy() - expected).max() <= 1
        assert abs(float(images.float().mean()) - wide.mean() / 257) < 0.5  # not 254.x


def test_exif_rotated_jpeg_is_read_upright(tmp_path: Path) -> None:
    stored = np.zeros((8, 16), dtype=np.uint8)
    stored[:, 8:] = 255  # left half black, right half white, as stored
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # shown turned 90 degrees clockwise: left half on top
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = np.zeros((16, 8), dtype=np.uint8)
    upright[8:] = 255
    Image.fromarray(upright).save(tmp_path / "scan.png")  # same size only once turned
    images = resolve(str(tmp_path))
    assert images.names == ["phone.jpg", "scan.png"]
    phone = images.images[0, 0].float()
    assert phone.shape == (16, 8)
    assert float(phone[:6].mean()) < 30 and float(phone[10:].mean()) > 225
    assert load_image(tmp_path / "phone.jpg").shape == (1, 16, 8)


def test_every_skipped_file_is_named_in_one_warning(tmp_path: Path) -> None:
    _write_grays(tmp_path / "faces", 2)
    (tmp_path / "faces" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "faces" / "notes.txt").write_text("where these came from")
    (tmp_path / "faces" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "faces" / "broken.png").write_bytes(b"\x89PNG not really")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = resolve(str(tmp_path / "faces"))
    assert len(images) == 2
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "skipped 1 unreadable image(s), 3 file(s) that are not images" in message
    for name in ("logo.svg (vector image", "notes.txt (not an image", ".DS_Store", "broken.png"):
        assert name in message


def test_folder_without_usable_image_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as raised:
        resolve(str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"no usable image in folder {tmp_path}")
    assert "broken.png (cannot identify image file" in message
    assert "logo.svg (vector image" in message
