"""A named collection of colour photographs from Debian's desktop-background packages, split
into training photos and held-out whole photos by file name.

`latentspace data fetch photos` takes the packages' photographs (the illustrations and renders
beside them are left out), checks each source file's SHA-256, scales it so its longer side is
`longest_side` pixels (Lanczos; the sources are 1280-6000 pixels wide, too slow for a model on a
CPU at full size, and already JPEG-compressed) and keeps it as PNG under the data home:
`photos/train/*.png` and `photos/test/*.png`. Photos differ in size, so they are used as a
folder: `photo_folder("photos:train")` is that folder, for training on random crops.

The packages are read without installing them (`apt-get download` and `dpkg-deb`, which need no
root), or from /usr/share/backgrounds when they are installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from latentspace.data.datasets import data_home
from latentspace.errors import DataError

__all__ = ["PHOTO_SETS", "PhotoCollection", "fetch_photos", "photo_folder", "photo_status"]

SPLITS = ("train", "test")
SYSTEM_ROOT = Path("/")  # where installed packages put their files


@dataclasses.dataclass(frozen=True)
class PhotoCollection:
    name: str
    description: str
    packages: tuple[str, ...]  # Debian packages holding the photos
    sources: dict[str, str]  # the photo's path in its package (under /) -> SHA-256 of the file
    test: tuple[str, ...]  # file stems held out whole: never cropped for training
    longest_side: int = 768
    how_to_get: str = ""

    def split_of(self, source: str) -> str:
        return "test" if Path(source).stem in self.test else "train"


_LOMIRI = "usr/share/backgrounds/"
_MATE = "usr/share/backgrounds/mate/nature/"
PHOTOS = PhotoCollection(
    name="photos",
    description="24 colour photographs (landscapes, plants, animals, objects), longer side 768 "
    "px, 18 train + 6 test (Debian lomiri-wallpapers-16.04 and mate-backgrounds)",
    packages=("lomiri-wallpapers-16.04", "mate-backgrounds"),
    sources={
        f"{_LOMIRI}Bridge_by_Sander_Klootwijk.jpg": "bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050",
        f"{_LOMIRI}Dragonfly_by_Bolly.jpg": "af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3",
        f"{_LOMIRI}Picture_0B_by_freespace.jpg": "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad",
        f"{_LOMIRI}Picture_1A_by_freespace.jpg": "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b",
        f"{_LOMIRI}Wine_by_Jakkub_Mede.jpg": "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74",
        f"{_LOMIRI}aitzgorri_by_Aitzol_Berasategi.jpg": "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36",
        f"{_LOMIRI}free_by_Peter_Nerlich.jpg": "85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373",
        f"{_LOMIRI}friends_by_Aitzol_Berasategi.jpg": "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d",
        f"{_LOMIRI}greentock_by_Peter_Nerlich.jpg": "e7b20e2db9dcd6e2b278ca55873c2110b35d89cd38b04d0b18728726888e6889",
        f"{_LOMIRI}life_by_Aitzol_Berasategi.jpg": "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05",
        f"{_LOMIRI}picosdeeuropa_by_Aitzol_Berasategi.jpg": "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a",
        f"{_LOMIRI}seeding_by_Clements_Engelhardt.jpg": "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f",
        f"{_LOMIRI}sunset_by_Aitzol_Berasategi.jpg": "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18",
        f"{_MATE}Blinds.jpg": "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600",
        f"{_MATE}Dune.jpg": "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91",
        f"{_MATE}FreshFlower.jpg": "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e",
        f"{_MATE}Garden.jpg": "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78",
        f"{_MATE}GreenMeadow.jpg": "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832",
        f"{_MATE}LadyBird.jpg": "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d",
        f"{_MATE}RainDrops.jpg": "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16",
        f"{_MATE}Storm.jpg": "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957",
        f"{_MATE}TwoWings.jpg": "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb",
        f"{_MATE}Wood.jpg": "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07",
        f"{_MATE}YellowFlower.jpg": "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306",
    },
    # one of each kind held out: people's pets, an object indoors, a close-up, a landscape, sky
    test=(
        "friends_by_Aitzol_Berasategi",
        "greentock_by_Peter_Nerlich",
        "Picture_1A_by_freespace",
        "LadyBird",
        "Storm",
        "YellowFlower",
    ),
    how_to_get="run `latentspace data fetch photos` (needs apt-get and dpkg-deb: Debian or Ubuntu)",
)
PHOTO_SETS: dict[str, PhotoCollection] = {"photos": PHOTOS}


def _directory(name: str) -> Path:
    return data_home() / name


def photo_status(name: str) -> tuple[bool, Path]:
    """(present, directory): present when every photo of the collection is in the data home."""
    spec, directory = PHOTO_SETS[name], _directory(name)
    present = all(
        (directory / spec.split_of(source) / f"{Path(source).stem}.png").is_file()
        for source in spec.sources
    )
    return present, directory


def photo_folder(spec: str) -> Path | None:
    """The folder a photo collection's `NAME:split` names (`photos:train`, `photos:test`; no
    split: train), or None when `spec` names no photo collection. A one-line DataError when the
    split is unknown or the photos are not fetched."""
    name, _, split = spec.partition(":")
    if name not in PHOTO_SETS:
        return None
    split = split or "train"
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {name}; use train or test")
    present, directory = photo_status(name)
    if not present:
        raise DataError(f"dataset {name!r} not found in {directory}: {PHOTO_SETS[name].how_to_get}")
    return directory / split


def _unpack(packages: tuple[str, ...], into: Path) -> None:
    """Download the .deb files (no root needed) and unpack them under `into`."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not installed: the photos come from Debian packages")
    download = ["apt-get", "download", "-q", *packages]
    result = subprocess.run(download, cwd=into, capture_output=True, text=True, check=False)
    if result.returncode != 0 and os.geteuid() == 0:  # the package lists may be missing
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, check=False)
        result = subprocess.run(download, cwd=into, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"apt-get download {' '.join(packages)} failed: {last}")
    for deb in sorted(into.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into / "root")], check=True, timeout=600)


def _read_sources(spec: PhotoCollection, root: Path) -> dict[str, bytes]:
    """Each source photo under `root`, checked against its SHA-256."""
    files = {}
    for source, digest in spec.sources.items():
        path = root / source
        if not path.is_file():
            raise DataError(f"{path} is missing from the packages {', '.join(spec.packages)}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"{path} fails its SHA-256 check (another package version?)")
        files[source] = data
    return files


def _scaled_png(data: bytes, longest_side: int) -> bytes:
    """The photo upright (EXIF orientation), RGB, its longer side `longest_side`, as PNG."""
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = longest_side / max(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def fetch_photos(name: str, log: Callable[[str], None] = print) -> Path:
    """Make a photo collection present in the data home (see the module docstring)."""
    spec = PHOTO_SETS[name]
    present, directory = photo_status(name)
    if present:
        return directory
    system = SYSTEM_ROOT
    if all((system / source).is_file() for source in spec.sources):
        files, origin = _read_sources(spec, system), "the installed packages"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            _unpack(spec.packages, Path(tmp))
            files, origin = _read_sources(spec, Path(tmp) / "root"), "Debian packages"
    for source, data in files.items():
        folder = directory / spec.split_of(source)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{Path(source).stem}.png"
        tmp_file = folder / f".{target.name}.tmp"
        tmp_file.write_bytes(_scaled_png(data, spec.longest_side))
        os.replace(tmp_file, target)  # atomic: a killed fetch leaves no half-written photo
    log(f"{name}: {len(files)} photos from {origin} ({', '.join(spec.packages)}) into {directory}")
    return directory
