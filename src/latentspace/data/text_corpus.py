"""Named English text corpora, installed from a package registry and cut into sentences.

`fortunes` is Debian's fortune-cookie collection (package `fortunes`, pinned by version and
SHA-256): its quotations are cut into sentences of 3 to 40 words, de-duplicated, and each sentence
goes to train, validation or test by a hash of its own text, so the split never changes when the
collection is re-read or another sentence is added. The sentences are kept as three UTF-8 files in
the data home; loading them is a plain read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from latentspace.errors import DataError

__all__ = ["CORPORA", "SPLITS", "Corpus", "corpus_status", "cut_sentences", "fetch_corpus"]

SPLITS = ("train", "valid", "test")
MIN_WORDS, MAX_WORDS = 3, 40


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    package: str  # the Debian package, pinned: name=version
    deb_sha256: str  # of the .deb file apt downloads
    members: str  # the folder inside the package that holds the text
    skip: tuple[str, ...] = ()  # files in that folder that are not prose


CORPORA: dict[str, Corpus] = {
    "fortunes": Corpus(
        name="fortunes",
        description="English sentences (3-40 words) from Debian's fortune cookies, about 20000 "
        "train + 2500 valid + 2500 test",
        package="fortunes=1:1.99.1-7.3",
        deb_sha256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
        members="usr/share/games/fortunes/",
        skip=("ascii-art", "art"),
    ),
}


def _home() -> Path:
    from latentspace.data.datasets import data_home

    return data_home()


def corpus_status(name: str) -> tuple[bool, Path]:
    """(present, directory): present when the three split files are in the data home."""
    directory = _home() / name
    return all((directory / f"{split}.txt").is_file() for split in SPLITS), directory


# A quotation's attribution ("-- Mark Twain"), backspace overstriking ("_\bx"), and the places a
# sentence ends: after . ! or ? (and a closing quote) before a capital or an opening quote.
_ATTRIBUTION = re.compile(r"^\s*--")
_OVERSTRIKE = re.compile(r".\x08")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]?\s+(?=[\"'(]?[A-Z])")


def cut_sentences(text: str) -> list[str]:
    """Fortune-file text (quotations separated by lines holding only '%') -> its sentences of
    MIN_WORDS to MAX_WORDS words that are mostly letters (not code, tables or ASCII art)."""
    found = []
    for quotation in re.split(r"^%\s*$", _OVERSTRIKE.sub("", text), flags=re.MULTILINE):
        lines = [line for line in quotation.splitlines() if not _ATTRIBUTION.match(line)]
        flat = " ".join(" ".join(lines).split())
        for sentence in _SENTENCE_END.split(flat):
            words = sentence.split()
            letters = sum(c.isalpha() or c.isspace() for c in sentence)
            if MIN_WORDS <= len(words) <= MAX_WORDS and letters >= 0.8 * len(sentence):
                found.append(sentence)
    return found


def _split_of(sentence: str) -> str:
    """train (80%), valid (10%) or test (10%), by a hash of the sentence itself: stable."""
    bucket = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:4], "big") % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def _sentences_of_package(deb: Path, corpus: Corpus) -> list[str]:
    """Every sentence of the package's text files, in file order, each once."""
    tar_bytes = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True, timeout=120
    ).stdout
    seen: dict[str, None] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name.lstrip("./")
        )
        for member in members:
            path = member.name.lstrip("./")
            base = path.rsplit("/", 1)[-1]
            if not path.startswith(corpus.members) or "." in base or base in corpus.skip:
                continue  # the .dat index files, .u8 variants, non-prose files
            handle = tar.extractfile(member)
            if handle is not None:
                text = handle.read().decode("utf-8", errors="replace")
                seen.update(dict.fromkeys(cut_sentences(text)))
    return list(seen)


def _download(corpus: Corpus, folder: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError(
            f"{corpus.name} comes from the Debian package {corpus.package.split('=')[0]}: "
            "this needs apt-get and dpkg-deb (a Debian or Ubuntu system)"
        )
    result = subprocess.run(
        ["apt-get", "download", "-q", corpus.package],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    debs = list(folder.glob("*.deb"))
    if result.returncode != 0 or not debs:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(
            f"apt-get download {corpus.package} failed ({last}); run `sudo apt-get update` "
            "and fetch again"
        )
    return debs[0]


def fetch_corpus(name: str, log: Callable[[str], None] = print) -> Path:
    """Make the named corpus present in the data home: download its pinned package, check its
    SHA-256, cut it into sentences and write the three splits (each file written atomically)."""
    corpus = CORPORA.get(name)
    if corpus is None:
        raise DataError(f"unknown text corpus {name!r}; known: {', '.join(CORPORA)}")
    present, directory = corpus_status(name)
    if present:
        return directory
    with tempfile.TemporaryDirectory() as tmp:
        deb = _download(corpus, Path(tmp))
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        if digest != corpus.deb_sha256:
            raise DataError(
                f"{deb.name} fails its SHA-256 check ({digest}); the pinned package "
                f"{corpus.package} was expected"
            )
        sentences = _sentences_of_package(deb, corpus)
    _write_splits(directory, sentences)
    log(f"{name}: {len(sentences)} sentences from Debian package {corpus.package} into {directory}")
    return directory


def _write_splits(directory: Path, sentences: Iterable[str]) -> None:
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    for sentence in sentences:
        splits[_split_of(sentence)].append(sentence)
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in splits.items():
        tmp = directory / f".{split}.txt.tmp"
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, directory / f"{split}.txt")
