"""A folder of images decoded once, in worker processes, into an on-disk cache that training,
evaluation and every command read a batch at a time (data.store), so a folder larger than memory
is usable and the second epoch decodes nothing.

The cache of a folder lives in `cache_root()/folders/KEY/`, KEY naming the folder's resolved path
and the decode settings (data.size, data.channels):

    shard-ID.bin    the decoded images of one chunk of files, uint8 records one after another
    shard-ID.json   the shard's commit point, written after its .bin: the files it holds (name,
                    size, mtime), each record's offset, shape and checksum, and the files skipped
    index.npy       (N, 6) int64, one row per image in name order (store.INDEX_COLUMNS)
    manifest.json   written last: the folder's fingerprint, the shards in order, the names

Variable-size records with an offset index, not one (N, C, H, W) array: photos of different sizes
are stored at their own size, unpadded, and data.crop cuts each where it lies; the index makes any
record one positioned read. A chunk ends after a file whose name hashes to 0 modulo the chunk
length, so adding, removing or changing one file changes one chunk: only its shard is decoded
again, the others are kept, and an interrupted build resumes from the shards it committed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latentspace.data import files
from latentspace.data.datasets import data_home
from latentspace.data.imageset import ImageSet
from latentspace.data.store import DiskRecords, Images, check_crop, checksum
from latentspace.errors import DataError, StorageError
from latentspace.progress import Progress

__all__ = ["SHARD_FILES", "cache_folder", "cache_root", "folder_cache", "open_folder", "workers"]

FORMAT = 2  # 2: XXH3 checksums (1: CRC-32)
SHARD_FILES = 256  # files per shard on average: the unit of parallel work, resume and update
_SAY_FROM = 500  # images to decode from which a build shows its progress
_Entry = tuple[str, int, int]  # a file as fingerprinted: relative name, size, mtime in ns


def cache_root() -> Path:
    """Where decoded folders are kept: `$LATENTSPACE_CACHE`, else the data home's `cache/`."""
    env = os.environ.get("LATENTSPACE_CACHE")
    return Path(env).expanduser() if env else data_home() / "cache"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def folder_cache(folder: Path, size: int | None, channels: int | None) -> Path:
    """The cache directory of `folder` decoded at these settings."""
    return cache_root() / "folders" / _digest([str(folder.resolve()), size, channels])[:24]


def _unwritable(path: Path, error: OSError) -> StorageError:
    return StorageError(
        f"cannot write the image cache in {path}: {error.strerror or error}; set "
        "LATENTSPACE_CACHE (or LATENTSPACE_DATA, the data home) to a writable folder"
    )


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) beside `path`, then rename it over `path` (a reader sees all or nothing)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(name))
        umask = os.umask(0)  # mkstemp makes 0600; give the mode a plain open() would
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)
        os.replace(name, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _write_json(path: Path, value: Any) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(value), encoding="utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---- the folder's files ------------------------------------------------------------------------
def _listing(folder: Path) -> tuple[list[_Entry], list[tuple[str, files._Unusable]]]:
    """(image files as fingerprinted, other files with why they are not used); no image opened."""
    images: list[_Entry] = []
    others: list[tuple[str, files._Unusable]] = []
    for path in sorted(p for p in folder.rglob("*") if not p.is_dir()):
        name, suffix = str(path.relative_to(folder)), path.suffix.lower()
        if not path.is_file():
            others.append((name, files._Unusable("not an image", "not a file: a broken link?")))
        elif suffix in files._VECTOR_SUFFIXES:
            reason = "vector image: convert it to PNG"
            others.append((name, files._Unusable("not an image", reason)))
        elif suffix not in files.IMAGE_SUFFIXES:
            others.append((name, files._Unusable("not an image", "not an image file")))
        else:
            stat = path.stat()
            images.append((name, stat.st_size, stat.st_mtime_ns))
    return images, others


def _chunks(entries: list[_Entry], per_shard: int) -> list[list[_Entry]]:
    """Consecutive files, cut after a name whose hash is 0 modulo `per_shard` (or at 4x its
    length), so a change to one file moves no boundary elsewhere."""
    chunks: list[list[_Entry]] = []
    current: list[_Entry] = []
    for entry in entries:
        current.append(entry)
        draw = int.from_bytes(hashlib.sha256(entry[0].encode()).digest()[:8], "big")
        if draw % per_shard == 0 or len(current) >= 4 * per_shard:
            chunks.append(current)
            current = []
    return [*chunks, current] if current else chunks


# ---- one shard, in a worker --------------------------------------------------------------------
def _decode_shard(job: tuple[str, str, str, list[_Entry], int | None, int | None]) -> int:
    """Decode one chunk into shard-ID.bin, then commit shard-ID.json; returns the files done.
    Runs in a worker process: NumPy and Pillow only, nothing from torch."""
    folder, directory, shard, chunk, size, channels = job
    records: list[list[Any]] = []
    skipped: list[list[str]] = []
    data = Path(directory) / f"shard-{shard}.bin"

    def write(tmp: Path) -> None:
        offset = 0
        with tmp.open("wb") as stream:
            for name, _, _ in chunk:
                try:
                    image = files._decode(Path(folder) / name)
                except files._Unusable as error:
                    skipped.append([name, error.kind, error.reason])
                    continue
                wanted = channels or (1 if image.mode in files._GRAY_MODES else 3)
                pixels = files._pixels(image, wanted, size)
                stream.write(pixels.tobytes())
                records.append([name, offset, *pixels.shape, checksum(pixels.data)])
                offset += pixels.size

    _atomic(data, write)
    part = {"files": chunk, "records": records, "skipped": skipped, "bytes": data.stat().st_size}
    _write_json(Path(directory) / f"shard-{shard}.json", part)
    return len(chunk)


def _read_part(directory: Path, shard: str, chunk: list[_Entry]) -> dict[str, Any] | None:
    """A committed shard that holds exactly `chunk` and whose data has its full size, or None."""
    part = _read_json(directory / f"shard-{shard}.json")
    if not isinstance(part, dict) or [tuple(e) for e in part.get("files", [])] != chunk:
        return None
    try:
        complete = (directory / f"shard-{shard}.bin").stat().st_size == part["bytes"]
    except (OSError, KeyError):
        return None
    return part if complete else None


def workers() -> int:
    """Decoding processes: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run(jobs: list[Any], count: int) -> Iterator[int]:
    """Each job's result as it finishes: in this process for one job or one worker, else in a
    pool of `count` forked processes (fork: the workers need no re-import of torch)."""
    if count <= 1 or len(jobs) <= 1:
        yield from map(_decode_shard, jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with concurrent.futures.ProcessPoolExecutor(min(count, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_decode_shard, job) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


# ---- building and opening ----------------------------------------------------------------------
def _build(
    folder: Path,
    directory: Path,
    entries: list[_Entry],
    settings: tuple[int | None, int | None],
    per_shard: int,
    processes: int,
    quiet: bool,
) -> dict[str, Any]:
    """Decode the shards not already committed, then commit index.npy and manifest.json."""
    chunks = _chunks(entries, per_shard)
    ids = [_digest(chunk)[:16] for chunk in chunks]
    todo = [(i, c) for i, c in zip(ids, chunks, strict=True) if not _read_part(directory, i, c)]
    jobs = [(str(folder), str(directory), i, c, *settings) for i, c in todo]
    count = sum(len(c) for _, c in todo)
    quiet = quiet or count < _SAY_FROM  # a few images decode in a moment: nothing to follow
    with Progress(f"caching {folder}", len(entries), unit="image", quiet=quiet) as progress:
        progress.advance(len(entries) - count)
        progress.phase(f"decoding {count} images once")
        for done in _run(jobs, processes):
            progress.advance(done)
    parts = [_read_part(directory, i, c) for i, c in zip(ids, chunks, strict=True)]
    if any(part is None for part in parts):
        raise StorageError(f"the image cache in {directory} changed while it was written")
    rows, names, skipped = [], [], []
    for number, part in enumerate(p for p in parts if p is not None):
        rows += [[number, *record[1:]] for record in part["records"]]
        names += [record[0] for record in part["records"]]
        skipped += part["skipped"]
    index = np.array(rows, dtype=np.int64).reshape(-1, 6)
    _atomic(directory / "index.npy", lambda tmp: _save_array(tmp, index))
    manifest = {
        "format": FORMAT,
        "folder": str(folder),
        "fingerprint": _digest(entries),
        "shards": [[i, p["bytes"]] for i, p in zip(ids, parts, strict=True) if p is not None],
        "names": names,
        "skipped": skipped,
        "index_sha256": hashlib.sha256(index.tobytes()).hexdigest(),
    }
    _write_json(directory / "manifest.json", manifest)
    _remove_strays(directory, set(ids))
    return manifest


def _save_array(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as stream:  # np.save given a path would add ".npy" to its name
        np.save(stream, array, allow_pickle=False)


def _remove_strays(directory: Path, kept: set[str]) -> None:
    """Shards of files no longer in the folder, and temporary files of a killed build."""
    for path in directory.iterdir():
        stray = path.name.startswith("shard-") and path.name[6:22] not in kept
        if stray or path.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                path.unlink()


def _load(directory: Path, fingerprint: str) -> tuple[dict[str, Any], np.ndarray] | None:
    """The committed cache, when it is of this folder's files and whole, else None. Sizes are
    checked here (a truncated shard); each image's checksum when it is read."""
    manifest = _read_json(directory / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    try:
        for shard, size in manifest["shards"]:
            if (directory / f"shard-{shard}.bin").stat().st_size != size:
                return None
        index = np.load(directory / "index.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if hashlib.sha256(index.tobytes()).hexdigest() != manifest.get("index_sha256"):
        return None
    return manifest, index


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time (ranks of a torchrun job, two commands): flock on `.lock`."""
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _prune(root: Path, keep: Path) -> None:
    """Caches of folders that no longer exist (a deleted temporary folder) are removed."""
    for entry in root.glob("*/source.json"):
        source = _read_json(entry)
        if entry.parent != keep and isinstance(source, str) and not Path(source).is_dir():
            shutil.rmtree(entry.parent, ignore_errors=True)


def _drop_shard(directory: Path, shard: str) -> Callable[[int], None]:
    def drop(number: int) -> None:
        for name in (f"shard-{shard}.json", "manifest.json"):  # decoded again next time
            with contextlib.suppress(OSError):
                (directory / name).unlink()

    return drop


def _prepared(
    folder: Path, entries: list[_Entry], settings: tuple[int | None, int | None], **build: Any
) -> tuple[Path, dict[str, Any], np.ndarray]:
    """The folder's cache, built or brought up to date first when it is not."""
    directory = folder_cache(folder, *settings)
    fingerprint = _digest(entries)
    loaded = _load(directory, fingerprint)
    if loaded is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _write_json(directory / "source.json", str(folder))
            with _locked(directory):
                loaded = _load(directory, fingerprint)  # another process may have built it
                if loaded is None:
                    _build(folder, directory, entries, settings, **build)
                    loaded = _load(directory, fingerprint)
            _prune(directory.parent, directory)
        except OSError as error:
            raise _unwritable(directory, error) from None
        if loaded is None:
            raise StorageError(f"the image cache in {directory} changed while it was written")
    return directory, *loaded


def open_folder(
    folder: Path,
    size: int | None = None,
    channels: int | None = None,
    strict: bool = False,
    *,
    crop: int | None = None,
    quiet: bool = False,
    per_shard: int = SHARD_FILES,
    processes: int | None = None,
) -> ImageSet:
    """Every image below `folder` as `Images` read from its cache (decoded first when the cache
    is missing or the folder changed), with the promises of files.load_folder: unusable files
    skipped with one warning (an error under `strict`), labels from sub-folders."""
    folder = folder.expanduser()
    entries, others = _listing(folder.resolve())
    if not entries and not others:
        raise DataError(f"no images ({', '.join(files.IMAGE_SUFFIXES)}) found in folder {folder}")
    directory, manifest, index = _prepared(
        folder.resolve(),
        entries,
        (size, channels),
        per_shard=per_shard,
        processes=workers() if processes is None else processes,
        quiet=quiet,
    )
    skipped = others + [(n, files._Unusable(k, r)) for n, k, r in manifest["skipped"]]
    _report_skipped(folder, skipped, strict, kept=len(index))
    shards = [directory / f"shard-{shard}.bin" for shard, _ in manifest["shards"]]
    drops = [_drop_shard(directory, shard) for shard, _ in manifest["shards"]]
    records = DiskRecords(shards, index, manifest["names"], lambda n: drops[n](n))
    wanted = channels or (1 if (index[:, 2] == 1).all() else 3)
    if crop is None and size is None:
        _check_common_size(folder, index, manifest["names"])
    images = Images(records, wanted, crop=crop)
    if crop is not None:
        check_crop(images, crop, manifest["names"])
    return files._image_set(folder, images, [Path(n) for n in manifest["names"]])


def cache_folder(folder: Path, size: int | None = None, channels: int | None = None) -> str:
    """Decode `folder` into its cache now (or bring it up to date), as the first use would; a
    sentence saying what the cache holds (`latentspace data cache`)."""
    folder = folder.expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    entries, _ = _listing(folder.resolve())
    if not entries:
        raise DataError(f"no images ({', '.join(files.IMAGE_SUFFIXES)}) found in folder {folder}")
    directory, manifest, index = _prepared(
        folder.resolve(),
        entries,
        (size, channels),
        per_shard=SHARD_FILES,
        processes=workers(),
        quiet=False,
    )
    sides = {tuple(side) for side in index[:, 3:5].tolist()}
    held = sum(nbytes for _, nbytes in manifest["shards"]) / 2**20
    return (
        f"{folder}: {len(index)} images of {len(sides)} size(s), {len(manifest['skipped'])} "
        f"unreadable, {held:.1f} MiB decoded in {directory}"
    )


def _report_skipped(
    folder: Path, skipped: list[tuple[str, files._Unusable]], strict: bool, kept: int
) -> None:
    """files.load_folder's one warning (or error) about the files not used."""
    if not skipped:
        return
    skipped.sort(key=lambda item: item[0])
    failed = [item for item in skipped if item[1].kind != "not an image"]
    if strict and failed:
        raise DataError(f"{files._describe(failed, folder)} (an error under data.strict)")
    if not kept:
        raise DataError(f"no usable image in folder {folder}: {files._describe(skipped, folder)}")
    warnings.warn(f"skipped {files._describe(skipped, folder)}", stacklevel=3)


def _check_common_size(folder: Path, index: np.ndarray, names: list[str]) -> None:
    different = np.flatnonzero((index[:, 3:5] != index[0, 3:5]).any(axis=1))
    if len(different):
        (h, w), (h2, w2) = index[0, 3:5], index[different[0], 3:5]
        raise DataError(
            f"images in {folder} have different sizes ({w}x{h} in {Path(names[0]).name}, "
            f"{w2}x{h2} in {Path(names[different[0]]).name}): pass --size N to resize them all "
            "to NxN, or set data.crop to train on crops"
        )
