"""The CLI end to end, in-process, on tiny data: train, info, encode, decode, generate,
reconstruct, resume, and the one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from latentspace.cli import main


def _train(tmp_path: Path, data: Path, *extra: str) -> Path:
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "vae",
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--latent-dim",
        "2",
        "--hidden",
        "24",
        "--quiet",
        "--no-report",
        *extra,
    ]
    assert main(args) == 0
    return out


def test_train_and_use_a_run(
    tmp_path: Path, tiny_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _train(
        tmp_path, tiny_npz, "--activation", "tanh", "--l2", "1e-4", "--set", "train.schedule=cosine"
    )
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "activation=tanh" in out and "parameters:" in out and "after epoch 2" in out

    codes = tmp_path / "codes.npz"
    assert main(["encode", str(run), str(tiny_npz), "--out", str(codes), "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "compression 36.0x" in out  # 144 bytes per image -> 2 float16 codes of 2 bytes
    with np.load(codes) as saved:
        assert saved["codes"].shape == (64, 2) and saved["codes"].dtype == np.float16
        assert saved["labels"].shape == (64,)

    assert main(["decode", str(run), str(codes), "--out", str(tmp_path / "decoded")]) == 0
    assert len(list((tmp_path / "decoded").glob("*.png"))) == 64
    assert main(["decode", str(run), str(codes), "--out", str(tmp_path / "grid.png")]) == 0
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] > 12

    assert (
        main(["generate", str(run), "-n", "9", "--seed", "1", "--out", str(tmp_path / "a.png")])
        == 0
    )
    assert (
        main(["generate", str(run), "-n", "9", "--seed", "1", "--out", str(tmp_path / "b.png")])
        == 0
    )
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()

    assert (
        main(
            ["reconstruct", str(run), str(tiny_npz), "-n", "8", "--out", str(tmp_path / "rec.png")]
        )
        == 0
    )
    assert "mean squared error" in capsys.readouterr().out


def test_resume_extends_a_run(tmp_path: Path, tiny_npz: Path) -> None:
    run = _train(tmp_path, tiny_npz)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_image_folder_input(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(10):
            array = np.random.default_rng(i).integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / label / f"{i}.jpg")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "ae",
                "--dataset",
                str(folder),
                "--size",
                "16",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--quiet",
                "--no-report",
                "--set",
                "model.architecture=conv",
                "--set",
                "model.channels=4,8",
            ]
        )
        == 0
    )
    assert main(["encode", str(out), str(folder), "--out", str(tmp_path / "c.npz")]) == 0
    with np.load(tmp_path / "c.npz") as saved:
        assert list(saved["names"][:2]) == ["a/0.jpg", "a/1.jpg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "--dataset", "DATA", "--out", "OUT", "--set", "train.lr=abc"],
            "train.lr: cannot use 'abc'",
        ),
        (
            ["train", "--dataset", "DATA", "--out", "OUT", "--set", "model.colour=red"],
            "unknown key model.colour",
        ),
        (["train", "--dataset", "nope.npy", "--out", "OUT"], "not found"),
        (["train", "--dataset", "DATA"], "--out runs/NAME"),
        (["train", "--resume", "OUT", "--lr", "0.1"], "only --epochs and --max-minutes may change"),
        (["info", "OUT"], "run directory"),
        (["generate", "OUT", "--out", "x.png"], "not found"),
        (
            [
                "train",
                "--dataset",
                "DATA",
                "--out",
                "OUT",
                "--lr",
                "100",
                "--optimizer",
                "sgd",
                "--set",
                "train.momentum=0",
            ],
            "probably too high",
        ),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path,
    tiny_npz: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    args = [a.replace("DATA", str(tiny_npz)).replace("OUT", str(tmp_path / "out")) for a in args]
    assert main([*args, "--quiet"] if args[0] == "train" else args) == 1
    err = capsys.readouterr().err
    assert err.startswith("latentspace: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_codes_of_the_wrong_size(
    tmp_path: Path, tiny_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _train(tmp_path, tiny_npz)
    bad = tmp_path / "bad.npz"
    np.savez(bad, codes=np.zeros((3, 5), dtype=np.float32))
    assert main(["decode", str(run), str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert "this run needs (N, 2)" in capsys.readouterr().err


def test_ctrl_c_says_how_to_resume(
    tmp_path: Path,
    tiny_npz: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import latentspace.commands.train as train_command
    from conftest import InterruptAfter

    train = train_command.train

    def interrupted(*args: Any, **kwargs: Any) -> Any:  # Ctrl-C once epoch 1 is saved
        return train(*args, **kwargs, callbacks=[InterruptAfter(1)])

    monkeypatch.setattr(train_command, "train", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tiny_npz), "--out", str(out), "--quiet"]) == 130
    assert f"keeps its epoch 1: continue with `latentspace train --resume {out}`" in (
        capsys.readouterr().err
    )
