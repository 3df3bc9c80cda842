from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_images
from latentspace.data import Batches, ImageSet, resolve
from latentspace.data.idx import read_idx
from latentspace.errors import DataError


def _write_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "cats", make_images(3, 10))
    _write_pngs(tmp_path / "dogs" / "deep", make_images(2, 10))
    images = resolve(str(tmp_path))
    assert images.images.shape == (5, 1, 10, 10) and images.images.dtype == torch.uint8
    assert images.classes == ["cats", "dogs"]
    assert images.labels is not None and images.labels.tolist() == [0, 0, 0, 1, 1]


def test_folder_rgb_resize(tmp_path: Path) -> None:
    _write_pngs(tmp_path, make_images(4, 10, channels=3))
    Image.fromarray(make_images(1, 20, channels=3)[0]).save(tmp_path / "big.jpg")
    images = resolve(str(tmp_path), size=16)
    assert images.images.shape == (5, 3, 16, 16)
    gray = resolve(str(tmp_path), size=8, channels=1)
    assert gray.images.shape == (5, 1, 8, 8)


def test_corrupt_images_are_skipped_with_one_warning(tmp_path: Path) -> None:
    _write_pngs(tmp_path, make_images(3, 8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*broken\.png"):
        images = resolve(str(tmp_path))
    assert len(images) == 3
    with pytest.raises(DataError, match=r"2 unreadable image\(s\)"):
        resolve(str(tmp_path), strict=True)


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images .* found in folder"):
        resolve(str(tmp_path / "empty"))
    _write_pngs(tmp_path / "mixed", make_images(2, 8))
    Image.fromarray(make_images(1, 9)[0]).save(tmp_path / "mixed" / "odd.png")
    with pytest.raises(DataError, match="different sizes .* pass --size N"):
        resolve(str(tmp_path / "mixed"))
    with pytest.raises(DataError, match="not found"):
        resolve(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "shape",
    [(5, 8, 8), (5, 8, 8, 3), (5, 3, 8, 8), (5, 8, 8, 1)],
)
def test_array_layouts(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(shape, dtype=np.uint8))
    images = resolve(str(path))
    assert images.images.shape[0] == 5 and images.images.shape[2:] == (8, 8)


def test_float_arrays_are_scaled(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, np.full((2, 4, 4), 0.5, dtype=np.float32))
    assert int(resolve(str(path)).images[0, 0, 0, 0]) == 128


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 784), dtype=np.uint8), r"shape \(5, 784\); expected"),
        (np.full((2, 4, 4), 2.0), r"must hold values in \[0, 1\]"),
        (np.full((2, 4, 4), 300), "dtype int64; use uint8"),
    ],
)
def test_bad_arrays(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message):
        resolve(str(path))


def test_idx_truncated(tmp_path: Path) -> None:
    path = tmp_path / "t-images-idx3-ubyte"
    header = bytes([0, 0, 8, 3]) + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2
    path.write_bytes(header + bytes(12))
    assert read_idx(path).shape == (3, 2, 2)
    path.write_bytes(header + bytes(5))
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_missing_named_dataset_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="latentspace data fetch mnist"):
        resolve("mnist")
    with pytest.raises(DataError, match="unknown split 'val'"):
        resolve("mnist:val")


def test_batches_cover_every_image_once_per_epoch() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = Batches(images, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = torch.cat(list(batches)).flatten() * 255
    assert sorted(seen.round().int().tolist()) == list(range(10))
    assert len(batches) == 3


def test_dynamic_binarization_is_fresh_per_epoch() -> None:
    images = torch.full((64, 1, 4, 4), 128, dtype=torch.uint8)
    batches = Batches(images, 64, dynamic=True, generator=torch.Generator().manual_seed(0))
    first, second = next(iter(batches)), next(iter(batches))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    assert abs(float(first.mean()) - 128 / 255) < 0.05


def test_split_is_seeded_and_disjoint() -> None:
    data = ImageSet(
        images=torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1),
        source="t",
        labels=torch.arange(20),
    )
    train, val = data.split(0.25, seed=3)
    assert val is not None and len(val) == 5 and len(train) == 15
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())  # type: ignore[union-attr]
    again, _ = data.split(0.25, seed=3)
    assert torch.equal(train.images, again.images)


def test_no_warning_for_clean_folder(tmp_path: Path) -> None:
    _write_pngs(tmp_path, make_images(2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve(str(tmp_path))
