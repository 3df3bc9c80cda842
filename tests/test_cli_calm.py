"""A calmer CLI (issue 23): shipped configs by name, labelled pictures, codes without a graph, the
report written by `ls.train`, KID with its scale, a report in the model's own terms, one-line
errors, and progress (n of N, time left) that --quiet silences."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentspace as ls
from latentspace.cli import main
from latentspace.config import Config, apply_overrides, load_config
from latentspace.imaging import image_grid
from latentspace.models import MODELS
from latentspace.runs import append_metrics

# the trainer alone (no report) under any version of the package: the fixtures stay cheap
train_only = sys.modules["latentspace.train"].train


@pytest.fixture
def run(tmp_path: Path, tiny_config: Config) -> Path:
    out = tmp_path / "run"
    train_only(tiny_config, out, quiet=True, diagnostics=False)
    return out


def _errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ---- item 4: shipped configs --------------------------------------------------------------------
def test_shipped_configs_are_listed_found_by_name_anywhere_and_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository: no configs/ folder here
    assert load_config("demo").model_name in MODELS
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert "demo" in listed and "make demo" in listed  # name and first comment line
    assert "tune-space" in listed and "--space" in listed
    assert main(["configs", "copy", "demo", "mine.toml"]) == 0
    capsys.readouterr()
    assert load_config("mine.toml") == load_config("demo")  # a path still works
    assert "already exists" in _errors(capsys, ["configs", "copy", "demo", "mine.toml"])
    assert "shipped" in _errors(capsys, ["train", "--config", "dem", "--out", "x"])


# ---- item 5: every picture labelled ----------------------------------------------------------
def _labelled(path: Path, count: int, nrow: int, rows: bool = False) -> None:
    """The PNG is the bare grid of `count` 12x12 tiles plus a label strip above (and left, with
    `rows`) that holds ink."""
    bare = image_grid(torch.zeros(count, 1, 12, 12), nrow)
    picture = Image.open(path).convert("L")
    assert picture.width >= bare.width and picture.height > bare.height, path.name
    top = np.asarray(picture.crop((0, 0, picture.width, picture.height - bare.height)))
    assert (top < 128).any(), f"{path.name}: blank title strip"
    if rows:
        left = np.asarray(
            picture.crop((0, top.shape[0], picture.width - bare.width, picture.height))
        )
        assert left.size and (left < 128).any(), f"{path.name}: no row labels"


# command -> (arguments after RUN, tiles, tiles per row, row labels); DATA is the tiny .npz
PICTURES = {
    "traverse": (["--dims", "0,1", "--steps", "3"], 6, 3, True),
    "interpolate": (["--from", "DATA:0", "--to", "DATA:1", "--steps", "3"], 5, 5, False),
    "reconstruct": (["DATA", "-n", "4"], 8, 4, True),
    "generate": (["-n", "4"], 4, 2, False),
    "neighbours": (["DATA:0", "-k", "3", "--dataset", "DATA"], 4, 4, False),
    "map": (["--dataset", "DATA", "--grid", "3"], 9, 3, True),
}


@pytest.mark.parametrize("command", PICTURES)
def test_every_picture_is_labelled(
    command: str, run: Path, tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, count, nrow, rows = PICTURES[command]
    arguments = [a.replace("DATA", str(tiny_npz)) for a in extra]
    out = tmp_path / f"{command}.png"
    assert main([command, str(run), *arguments, "--out", str(out)]) == 0
    capsys.readouterr()
    _labelled(tmp_path / "map-plane.png" if command == "map" else out, count, nrow, rows)
    if command == "neighbours":  # the query is framed
        picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
        red = (picture[..., 0] > 180) & (picture[..., 1] < 100) & (picture[..., 2] < 100)
        assert red.any()


# ---- item 2: the Python API ------------------------------------------------------------------
def test_codes_and_images_carry_no_graph_outside_training(run: Path) -> None:
    model = ls.load(run)
    x = torch.rand(3, 1, 12, 12)
    z = model.encode(x)
    assert not z.requires_grad
    assert z.numpy().shape == (3, 2)
    assert not model.decode(z).requires_grad
    assert not model.generate(2).requires_grad and not model.reconstruct(x).requires_grad
    wanted = z.clone().requires_grad_(True)  # differentiating through decode (inversion) works
    model.decode(wanted).sum().backward()
    assert wanted.grad is not None
    model.train()
    assert model.encode(x).requires_grad  # training keeps its graph


def test_ls_train_writes_the_report_and_the_cli_writes_it_once(
    tmp_path: Path, tiny_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentspace.analysis import report

    calls: list[Path] = []
    real = report.write_report

    def counted(run_dir: str | Path, **options: object) -> Path:
        calls.append(Path(run_dir))
        return real(run_dir, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(report, "write_report", counted)
    config = apply_overrides(tiny_config, ["train.epochs=1"])
    ls.train(config, tmp_path / "api", quiet=True, diagnostics=False)
    assert (tmp_path / "api" / "report.html").exists() and len(calls) == 1
    args = ["train", "--dataset", config.data.dataset, "--epochs", "1", "--hidden", "8", "--quiet"]
    assert main([*args, "--latent-dim", "2", "--out", str(tmp_path / "cli")]) == 0
    assert len(calls) == 2 and (tmp_path / "cli" / "report.html").exists()


# ---- item 2: numbers in their terms ----------------------------------------------------------
def test_a_report_speaks_in_the_models_terms_and_shows_its_fid(
    tmp_path: Path, tiny_config: Config, run: Path
) -> None:
    from latentspace.analysis.report import write_report

    players = [name for name, cls in MODELS.items() if cls.monitor is None]
    if not players:
        pytest.skip("every registered family has a validation loss")
    config = apply_overrides(
        tiny_config, [f"model.name={players[0]}", "train.epochs=1", "model.hidden_sizes=16"]
    )
    config = apply_overrides(config, ["model.inversion_steps=2", "model.inversion_restarts=1"])
    other = tmp_path / "players"
    train_only(config, other, quiet=True, diagnostics=False)
    scores = {"fid": 12.345, "kid_mean": 0.00678, "kid_std": 0.0009, "floor_fid": 1.5}
    scores |= {"floor_kid_mean": 0.0001, "floor_kid_std": 0.0001, "n_generated": 500}
    scores |= {"n_reference": 500, "reference": "tiny", "features": "test features"}
    append_metrics(other, {"kind": "quality", **scores})
    html = write_report(other).read_text()
    losses = html[html.index("<h2>Loss curves") : html.index("<h2>Training diagnostics")]
    assert "nats per image" not in losses
    assert "12.345" in html and "6.780" in html  # FID, and KID x 10^3
    assert "nats per image" in write_report(run).read_text()


def test_kid_is_printed_with_its_scale(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LATENTSPACE_DATA", str(tmp_path / "home"))
    assert main(["quality", str(run), "-n", "20", "--no-save"]) == 0
    out, err = capfd.readouterr()
    assert "KID x 10^3" in out
    assert "quality: generating 20 images" in err and "left)" in err  # its progress


# ---- item 2: one-line errors -----------------------------------------------------------------
def test_hidden_sizes_with_spaces_is_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _errors(capsys, ["train", "--hidden", "512 256", "--out", str(tmp_path / "x")])
    assert err.strip() == (
        "latentspace: error: model.hidden_sizes: cannot use '512 256': expected whole numbers "
        "separated by commas, e.g. 512,256"
    )


def test_a_file_inside_a_run_names_the_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = run / "model.safetensors"
    err = _errors(capsys, ["generate", str(weights), "--out", str(run.parent / "g.png")])
    assert (
        f"{weights} is a file inside the run {run}" in err
        and f"pass the run directory, {run}" in err
    )


# ---- item 3: progress ------------------------------------------------------------------------
def test_train_says_n_of_n_and_the_time_left_and_quiet_says_nothing(
    tmp_path: Path, tiny_npz: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--dataset", str(tiny_npz), "--epochs", "2", "--hidden", "8"]
    args += ["--latent-dim", "2", "--no-diagnostics"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    out, err = capfd.readouterr()
    assert "epoch 1/2" in out and "left" in out.splitlines()[1]  # the whole run's time left
    report_lines = [line for line in err.splitlines() if line.startswith("report ")]
    assert len(report_lines) >= 5 and "1/" in report_lines[0]  # one line per figure, no bar
    assert any(f"{i}/" in line and "left)" in line for i, line in enumerate(report_lines, 1))
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")


def test_an_experiment_says_which_trial_of_how_many_and_the_time_left(
    tmp_path: Path, tiny_config: Config, capfd: pytest.CaptureFixture[str]
) -> None:
    from latentspace.experiments._common import Context, Speed, TrialSpec, run_trial

    ctx = Context(tmp_path, "tiny", 60.0, 0, Speed(1e-5, 1e-4, 0.01, 0.1))
    ctx.epochs_for([TrialSpec(48, 16)] * 2, min_epochs=1, max_epochs=1)
    config = apply_overrides(tiny_config, ["train.epochs=1"])
    for name in ("a", "b"):
        run_trial(ctx, "demo-sweep", name, config)
    err = capfd.readouterr().err
    assert "experiment demo-sweep 1/2: trial a (about" in err
    assert "experiment demo-sweep 2/2: trial b (about" in err
    assert not (tmp_path / "demo-sweep" / "trials" / "a" / "report.html").exists()


def test_evaluate_says_what_it_evaluates_and_quiet_or_json_says_nothing(
    tiny_run: Path, tiny_npz: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", str(tiny_run), "--split", "val", "--nll-samples", "5"]
    assert main(args) == 0
    err = capfd.readouterr().err
    assert "evaluate: " in err and "importance samples each" in err and "batch" in err
    assert main([*args, "--quiet"]) == 0
    assert capfd.readouterr().err == ""
    assert main([*args, "--json"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and json.loads(out)["nll_samples"] == 5
