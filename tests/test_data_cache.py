"""A folder decoded once into the on-disk cache (issue 21): reused while unchanged, brought up to
date when a file is added, removed or changed, resumed after a kill, damage detected; batches
read from it equal the in-memory ones bit for bit; crops and flips drawn from the seed; a
folder's test split placed by file name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentspace as ls
from conftest import InterruptAfter, make_images
from latentspace.cli import main
from latentspace.config import apply_overrides
from latentspace.data import Batches, Images, ImageSet, files, held_out, prepare_data, resolve
from latentspace.data import cache as data_cache
from latentspace.errors import DataError, StorageError


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATENTSPACE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _write(folder: Path, n: int, size: int = 10, channels: int = 1, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(make_images(n, size, channels=channels, seed=start)):
        Image.fromarray(image).save(folder / f"{start + i:03d}.png")


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files decoded from now on (the build runs in this process: one worker)."""
    seen: list[str] = []
    real = files._decode

    def counting(path: Path) -> Image.Image:
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(files, "_decode", counting)
    return seen


def _open(folder: Path, **settings: object) -> ImageSet:
    return data_cache.open_folder(folder, per_shard=2, processes=1, **settings)  # type: ignore[arg-type]


def _same_as_memory(folder: Path, decoded: list[str] | None = None) -> int:
    """Open `folder` through its cache, check it equals files.load_folder's images, and say how
    many files the cache decoded."""
    before = len(decoded) if decoded is not None else 0
    cached = _open(folder)
    count = len(decoded) - before if decoded is not None else 0
    memory = files.load_folder(folder)
    assert isinstance(cached.images, Images) and cached.names == memory.names
    assert torch.equal(cached.images[:], memory.images)
    return count


def test_reused_while_unchanged_and_updated_shard_by_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    _write(folder, 12)
    decoded = _decodes(monkeypatch)
    assert _same_as_memory(folder, decoded) == 12
    assert _same_as_memory(folder, decoded) == 0, "an unchanged folder is not decoded again"
    _write(folder, 1, start=40)  # added
    assert 1 <= _same_as_memory(folder, decoded) < 12, "only the added file's shard is decoded"
    assert "040.png" in decoded
    (folder / "003.png").unlink()  # removed
    assert _same_as_memory(folder, decoded) < 12
    Image.fromarray(make_images(1, 10, seed=9)[0]).save(folder / "005.png")  # changed
    os.utime(folder / "005.png", ns=(1, 1))
    assert 1 <= _same_as_memory(folder, decoded) < 12


def test_an_interrupted_build_resumes_from_its_committed_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    _write(folder, 16)
    real, done = data_cache._decode_shard, []

    def killed_after_two(job: tuple) -> int:  # type: ignore[type-arg]
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(job[2])
        return real(job)

    monkeypatch.setattr(data_cache, "_decode_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        _open(folder)
    directory = data_cache.folder_cache(folder, None, None)
    assert not (directory / "manifest.json").exists(), "the manifest is committed last"
    monkeypatch.setattr(data_cache, "_decode_shard", real)
    kept = {name for shard in done for name in _shard_files(directory, shard)}
    decoded = _decodes(monkeypatch)
    _open(folder)
    assert kept and not kept & set(decoded), "committed shards are not decoded again"
    assert len(decoded) == 16 - len(kept)
    _same_as_memory(folder)


def _shard_files(directory: Path, shard: str) -> list[str]:
    import json

    part = json.loads((directory / f"shard-{shard}.json").read_text())
    return [entry[0] for entry in part["files"]]


def test_truncated_shard_is_decoded_again_and_a_corrupted_one_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    _write(folder, 8, channels=3)
    _open(folder)
    directory = data_cache.folder_cache(folder, None, None)
    shards = sorted(directory.glob("shard-*.bin"))
    with shards[0].open("r+b") as stream:
        stream.truncate(shards[0].stat().st_size - 5)
    decoded = _decodes(monkeypatch)
    assert 0 < _same_as_memory(folder, decoded) < 8, "only the truncated shard is decoded again"
    data = bytearray(shards[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte wrong
    shards[-1].write_bytes(bytes(data))
    images = _open(folder).images
    with pytest.raises(DataError) as raised:
        images[:]
    message = str(raised.value)
    assert "\n" not in message and shards[-1].name in message and "checksum" in message
    _same_as_memory(folder)  # dropped when found: decoded again on the next use


def test_unwritable_cache_location_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "photos", 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LATENTSPACE_CACHE", str(blocker / "cache"))
    with pytest.raises(StorageError) as raised:
        resolve(str(tmp_path / "photos"))
    message = str(raised.value)
    assert "\n" not in message and str(blocker) in message and "LATENTSPACE_CACHE" in message


def test_batches_from_the_cache_equal_the_in_memory_ones(tmp_path: Path) -> None:
    """Grey and colour files in sub-folders, decoded by two worker processes."""
    _write(tmp_path / "photos" / "grey", 9)
    _write(tmp_path / "photos" / "colour", 9, channels=3, start=20)
    cached = data_cache.open_folder(tmp_path / "photos", per_shard=2, processes=2)
    memory = files.load_folder(tmp_path / "photos")
    assert cached.labels is not None and memory.labels is not None
    assert cached.classes == memory.classes and torch.equal(cached.labels, memory.labels)
    for settings in ({}, {"dynamic": True}):
        a, b = (
            Batches(
                s.images, 5, shuffle=True, generator=torch.Generator().manual_seed(3), **settings
            )
            for s in (cached, memory)
        )
        for _ in range(2):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _photos(folder: Path) -> None:
    """Colour photos of three sizes, none smaller than 12 pixels a side."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(12, 16), (20, 14), (16, 16)] * 4):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def _config(folder: Path, **data: object) -> ls.Config:
    config = ls.default_config(
        "vae", dataset=str(folder), epochs=2, batch_size=4, latent_dim=2, hidden_sizes=(8,)
    )
    return apply_overrides(config, [f"data.{k}={v}" for k, v in data.items()])


def test_crops_and_flips_are_drawn_from_the_seed(tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    config = _config(tmp_path / "photos", crop=12, flip="true", val_fraction=0.2)
    train, val = prepare_data(config)
    assert train.image_shape == (3, 12, 12) and val is not None and val.image_shape == (3, 12, 12)

    def epoch(seed: int) -> list[torch.Tensor]:
        return list(
            Batches(train.images, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        )

    assert all(torch.equal(a, b) for a, b in zip(epoch(1), epoch(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch(1), epoch(2), strict=True))
    whole = files.load_image(tmp_path / "photos" / f"{train.names[0]}")
    first = Batches(train.images, 1, generator=torch.Generator().manual_seed(5))
    crop = (next(iter(first))[0] * 255).round().to(torch.uint8)
    windows = whole.unfold(1, 12, 1).unfold(2, 12, 1).permute(1, 2, 0, 3, 4).reshape(-1, 3, 12, 12)
    assert any(torch.equal(w, crop) or torch.equal(w.flip(-1), crop) for w in windows)
    middle = val.images[0]  # validation: the centre crop, the same each time
    assert torch.equal(middle, val.images[0]) and middle.shape == (3, 12, 12)


def test_crops_without_crop_setting_and_too_small_images_are_one_line(tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    with pytest.raises(DataError, match=r"different sizes .* set data\.crop"):
        resolve(str(tmp_path / "photos"))
    with pytest.raises(
        DataError, match=r"data\.crop = 14, but 0\.png is 16x12: use a crop of at most 12"
    ):
        resolve(str(tmp_path / "photos"), crop=14)


def test_resumed_run_with_crops_and_flips_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    config = _config(tmp_path / "photos", crop=12, flip="true")
    whole = ls.train(config, tmp_path / "whole", quiet=True, report=False)
    with pytest.raises(KeyboardInterrupt):
        ls.train(config, tmp_path / "cut", callbacks=[InterruptAfter(1)], quiet=True, report=False)
    resumed = ls.train(config, tmp_path / "cut", resume=True, quiet=True, report=False)
    for (name, a), b in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_folder_test_split_is_stable_when_a_file_is_added(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _write(folder, 40)
    config = _config(folder)
    place: Callable[[], dict[str, str]] = lambda: _placed(config)  # noqa: E731
    before = place()
    assert set(before.values()) == {"train", "val", "test"}
    _write(folder, 5, start=100)
    after = place()
    assert {name: after[name] for name in before} == before, "no file moved between splits"


def _placed(config: ls.Config) -> dict[str, str]:
    train, val, test = (*prepare_data(config), held_out(config).images)
    sets = {"train": train, "val": val, "test": test}
    return {n: split for split, s in sets.items() if s is not None for n in s.names or []}


def test_evaluate_on_a_folder_run_needs_no_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "photos", 30)
    ls.train(_config(tmp_path / "photos"), tmp_path / "run", quiet=True, report=False)
    assert main(["evaluate", str(tmp_path / "run"), "--nll-samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "test split" in out


def test_data_cache_command_decodes_now_and_training_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "photos", 6)
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["data", "cache", str(tmp_path / "photos")]) == 0
    out = capsys.readouterr().out
    assert "6 images of 1 size(s), 1 unreadable" in out
    decoded = _decodes(monkeypatch)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\).*broken\.png"):
        assert len(resolve(str(tmp_path / "photos"))) == 6
    assert decoded == []
    assert main(["data", "cache", str(tmp_path / "nowhere")]) == 1


def test_crops_and_flips_of_in_memory_images(tiny_npz: Path) -> None:
    """Arrays and named datasets stay tensors; crops and flips come as a view over them."""
    config = _config(tiny_npz, crop=8, flip="true")
    train, val = prepare_data(config)
    assert isinstance(train.images, Images) and train.image_shape == (1, 8, 8)
    assert val is not None and torch.equal(
        val.images[:], val.images.records.tensor[:, :, 2:10, 2:10]
    )  # type: ignore[union-attr]

    def epoch(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.cat(list(Batches(train.images, 16, shuffle=True, generator=generator)))

    assert torch.equal(epoch(0), epoch(0)) and not torch.equal(epoch(0), epoch(1))
    assert isinstance(prepare_data(_config(tiny_npz))[0].images, torch.Tensor)


def test_a_folder_run_from_before_test_splits_keeps_its_validation_split(tmp_path: Path) -> None:
    """config.json without data.test_fraction was written before folders had a test split: it
    trained on the seeded random split, so its held-out images must still be that split's."""
    import json

    from latentspace.config import config_to_dict
    from latentspace.runs import FORMAT_VERSION, read_run_config

    folder = tmp_path / "photos"
    _write(folder, 30)
    sections = config_to_dict(_config(folder))
    del sections["data"]["test_fraction"], sections["data"]["split_by_name"]
    run = tmp_path / "old-run"
    run.mkdir()
    document = {"format_version": FORMAT_VERSION, "image_shape": [1, 10, 10], "config": sections}
    (run / "config.json").write_text(json.dumps(document))

    config, _, _ = read_run_config(run)
    _, old_val = resolve(str(folder)).split(0.1, config.train.seed)
    assert old_val is not None
    held = held_out(config)
    assert held.split == "val"
    assert held.images is not None and held.images.names == old_val.names


def test_images_index_like_the_tensor_they_stand_for() -> None:
    from latentspace.data.store import TensorRecords

    tensor = torch.arange(6 * 4, dtype=torch.uint8).reshape(6, 1, 2, 2)
    images = Images(TensorRecords(tensor), 1)
    for key in (torch.tensor([3, 0, -1]), np.array([5, 1]), [1, 2], slice(1, 4), 2, -6):
        assert torch.equal(images[key], tensor[key]), key
    mask = np.array([True, False, True, False, False, True])
    assert torch.equal(images[mask], tensor[torch.from_numpy(mask)])
    for key in (torch.tensor([6]), np.array([-7])):
        with pytest.raises(IndexError):
            images[key]


def test_shards_held_open_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentspace.data import store

    monkeypatch.setattr(store, "_OPEN_SHARDS", 2)
    _write(tmp_path / "photos", 12)
    cached = _open(tmp_path / "photos")
    assert isinstance(cached.images, Images)
    records = cached.images.records
    assert isinstance(records, store.DiskRecords) and len(records.shard_paths) > 2
    memory = files.load_folder(tmp_path / "photos")
    for _ in range(2):  # every shard read, twice, through at most 2 open descriptors
        for row in torch.randperm(12).tolist():
            assert torch.equal(cached.images[[row]], memory.images[[row]])
            assert len(records._files) <= 2
    records.close()
    assert records._files == {} and torch.equal(cached.images[:], memory.images)
