"""End to end on the real datasets that `make test` installs (a small slice, to stay fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import latentspace as ls
from latentspace.cli import main
from latentspace.data import dataset_status

pytestmark = pytest.mark.skipif(
    not (dataset_status("mnist")[0] and dataset_status("fashion-mnist")[0]),
    reason="real datasets missing: run `make data` (make test does)",
)


@pytest.mark.parametrize(("name", "classes"), [("mnist", "0"), ("fashion-mnist", "t-shirt/top")])
def test_named_datasets_are_complete(name: str, classes: str) -> None:
    train, test = ls.resolve(name), ls.resolve(f"{name}:test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels is not None and torch.bincount(train.labels).min() > 5000
    assert train.classes is not None and train.classes[0] == classes


def test_vae_learns_mnist_from_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "mnist-vae"
    assert (
        main(
            [
                "train",
                "--model",
                "vae",
                "--dataset",
                "mnist",
                "--out",
                str(out),
                "--epochs",
                "3",
                "--hidden",
                "256",
                "--latent-dim",
                "8",
                "--quiet",
                "--no-report",
                "--set",
                "data.limit=6000",
            ]
        )
        == 0
    )
    records = ls.open_run(out).metrics
    first, last = records[0]["val"]["total"], records[-1]["val"]["total"]
    assert last < first < 300, f"validation -ELBO went {first:.1f} -> {last:.1f}"
    assert (
        main(
            [
                "encode",
                str(out),
                "mnist:test",
                "--limit",
                "1000",
                "--out",
                str(tmp_path / "codes.npz"),
            ]
        )
        == 0
    )
