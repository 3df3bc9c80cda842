"""Training one run on several processes (torchrun's environment, gloo on the CPU): the weights
equal those of one process with the same global batch, a rank killed mid-run resumes to the
weights of an uninterrupted run, only rank 0 writes, and a launch without torchrun is refused.

The processes are started with torch.multiprocessing (torchrun itself costs ~10 s more per job
on a busy 2-core machine); each sets the variables torchrun would set.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import latentspace as ls
from conftest import make_images
from latentspace import distributed, runs
from latentspace.cli import main
from latentspace.config import Config, apply_overrides
from latentspace.errors import ConfigError

WORLD = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(rank: int, jobs: list[tuple[Config, str, int]], kill_at: int, restarted: bool) -> None:
    """One of WORLD ranks: train each (config, out, port) of `jobs` as torchrun's worker would.
    With kill_at, rank 1 kills itself (SIGKILL) at its kill_at-th optimiser step of the last job
    (`steps` counts from that job's start); each rank saves
    its own final weights beside the run (NAME-rank{r}.safetensors) to compare the ranks."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        TORCHELASTIC_RESTART_COUNT="1" if restarted else "0",
    )
    torch.set_num_threads(1)
    from latentspace.models import base
    from latentspace.train import Trainer

    average = base.average_gradients
    steps = [0, 0]  # optimiser steps in this job, whether this job is the one to kill

    def counted(parameters: Any) -> None:
        steps[0] += 1
        if rank == 1 and steps[1] and steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        average(parameters)

    base.average_gradients = counted
    fit = Trainer.fit

    def fit_and_keep(self: Trainer) -> list[dict[str, Any]]:
        records = fit(self)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, str(self.run_dir.parent / f"{self.run_dir.name}-rank{rank}.safetensors"))
        return records

    Trainer.fit = fit_and_keep  # type: ignore[method-assign]
    for index, (config, out, port) in enumerate(jobs):
        os.environ["MASTER_PORT"] = str(port)  # a new rendezvous for each job
        steps[:] = [0, index == len(jobs) - 1]
        try:
            ls.train(config, out, quiet=True, report=False, diagnostics=rank == 0)
        except ls.LatentspaceError as error:  # kept for the test to read; the next job goes on
            Path(f"{out}-rank{rank}.error").write_text(str(error))


def _spawn(jobs: list[tuple[Config, Path]], kill_at: int = 0, restarted: bool = False) -> None:
    args = ([(c, str(o), _free_port()) for c, o in jobs], kill_at, restarted)
    mp.spawn(_worker, args=args, nprocs=WORLD, join=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """41 images: 36 train in batches of 8 (the last, 4, splits 2 + 2) and 5 validation
    images, which split 3 + 2 (uneven parts)."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=make_images(41), labels=np.arange(41) % 4)
    return path


def _ae(data: Path, epochs: int = 3) -> Config:
    config = ls.default_config(
        "ae", dataset=str(data), epochs=epochs, batch_size=10, latent_dim=2, hidden_sizes=(16,)
    )
    return apply_overrides(config, ["train.device=cpu", "data.binarize=dynamic"])


def _gan(data: Path) -> Config:
    config = ls.default_config("gan", dataset=str(data), epochs=2, batch_size=10, latent_dim=2)
    return apply_overrides(
        config,
        [
            "train.device=cpu",
            "model.architecture=conv",
            "model.channels=4,8",
            "model.batch_norm=true",
            "model.ema=0.9",
            "model.r1=1.0",
            "model.r1_every=2",
        ],
    )


def _vqvae(data: Path) -> Config:
    """One epoch: dead codes restart only at the next epoch's first step."""
    config = ls.default_config("vqvae", dataset=str(data), epochs=1, batch_size=10, latent_dim=2)
    return apply_overrides(
        config, ["train.device=cpu", "model.width=4", "model.codebook_size=8", "model.factor=4"]
    )


@pytest.fixture(scope="module")
def two_processes(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One job of two ranks training an AE (dynamic binarization: the noise is drawn per global
    batch), a conv GAN with batch norm, a generator average and lazy R1, an AE whose loss
    diverges, one that stops early, and then the AE again into `killed`, where rank 1 is killed (SIGKILL) in the
    middle of epoch 2 (4 steps an epoch).
    One job for all three: starting processes is what costs."""
    where = tmp_path_factory.mktemp("ddp")
    diverging = apply_overrides(_ae(data), ["train.optimizer=sgd", "train.lr=1e6"])
    jobs = [
        (_ae(data), where / "ae"),
        (_gan(data), where / "gan"),
        (diverging, where / "diverged"),
        (apply_overrides(_ae(data), ["train.patience=1", "train.min_delta=1e9"]), where / "early"),
        (_vqvae(data), where / "vqvae"),
        (_ae(data), where / "killed"),
    ]
    with pytest.raises(mp.ProcessExitedException, match="signal SIGKILL"):
        _spawn(jobs, kill_at=6)
    return where


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(
    two_processes: Path, data: Path, tmp_path: Path
) -> None:
    single = ls.train(_ae(data), tmp_path / "single", quiet=True, report=False)
    two = runs.open_run(two_processes / "ae")
    _assert_close(_weights(two.path / runs.WEIGHTS), _weights(single.path / runs.WEIGHTS), 1e-5)
    # what the weights are compared against can differ: one step more moves them
    longer = ls.train(_ae(data, epochs=4), tmp_path / "longer", quiet=True, report=False)
    with pytest.raises(AssertionError):
        _assert_close(_weights(two.path / runs.WEIGHTS), _weights(longer.path / runs.WEIGHTS), 1e-5)
    epochs = [r for r in two.metrics if r.get("kind") == "epoch"]
    singles = [r for r in single.metrics if r.get("kind") == "epoch"]
    assert [r["train"]["total"] for r in epochs] == pytest.approx(
        [r["train"]["total"] for r in singles], rel=1e-5
    )
    assert [r["val"]["total"] for r in epochs] == pytest.approx(
        [r["val"]["total"] for r in singles], rel=1e-5
    )
    trained_on = {"world_size": 2, "backend": "gloo", "devices": "2 x cpu", "precision": "fp32"}
    assert all(r["trained_on"] == trained_on for r in epochs)
    assert two.info["trained_on"] == trained_on
    assert singles[0]["trained_on"]["world_size"] == 1


def test_a_codebook_moves_by_the_whole_global_batch(
    two_processes: Path, data: Path, tmp_path: Path
) -> None:
    """The VQ-VAE's moving averages learn without an optimiser: under two processes they move
    by the counts and sums of the whole global batch, as in one process (not by rank 0's half)."""
    single = ls.train(_vqvae(data), tmp_path / "single", quiet=True, report=False)
    two = _weights(two_processes / "vqvae" / runs.WEIGHTS)
    _assert_close(two, _weights(single.path / runs.WEIGHTS), 1e-5)


def test_every_rank_ends_with_the_weights_rank_0_saved(two_processes: Path) -> None:
    """The GAN's two optimisers, its generator average and batch-norm statistics agree."""
    for name in ("ae", "gan"):
        saved = _weights(two_processes / name / runs.WEIGHTS)
        ranks = [_weights(two_processes / f"{name}-rank{r}.safetensors") for r in range(WORLD)]
        _assert_close(ranks[0], ranks[1], 0.0)
        if name == "ae":  # the GAN's saved generator has standing statistics, set after training
            _assert_close(saved, ranks[0], 0.0)
    gan = ls.load(two_processes / "gan")
    assert gan.generate(4, generator=torch.Generator().manual_seed(0)).isfinite().all()


def test_a_divergence_stops_every_rank_with_one_line(two_processes: Path) -> None:
    """No rank is left waiting for another: each ends with a one-line error, rank 0's naming
    the cause, and the run keeps its last good state."""
    errors = [(two_processes / f"diverged-rank{r}.error").read_text() for r in range(WORLD)]
    assert all("\n" not in error for error in errors)
    assert "learning rate" in errors[0] and "keeps the last good state" in errors[0]
    model = ls.load(two_processes / "diverged")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_early_stopping_stops_every_rank(two_processes: Path) -> None:
    """With min_delta huge, patience 1 stops after epoch 2 (of 3): all ranks leave together."""
    run = ls.open_run(two_processes / "early")
    assert [r["epoch"] for r in run.metrics if r.get("kind") == "epoch"] == [1, 2]
    ranks = [_weights(two_processes / f"early-rank{r}.safetensors") for r in range(WORLD)]
    _assert_close(ranks[0], ranks[1], 0.0)


def test_a_killed_rank_resumes_to_the_weights_of_an_uninterrupted_run(
    two_processes: Path, data: Path, tmp_path: Path
) -> None:
    """The job killed in `two_processes` is started again as torchrun --max-restarts does
    (TORCHELASTIC_RESTART_COUNT=1, the same command) and continues from the last commit."""
    out = two_processes / "killed"
    kept = runs.committed_epoch(out)
    assert kept is not None and kept < 3
    _spawn([(_ae(data), out)], restarted=True)
    resumed = _weights(out / runs.WEIGHTS)
    _assert_close(resumed, _weights(two_processes / "ae" / runs.WEIGHTS), 0.0)


def test_a_launch_without_torchrun_is_refused_in_one_line(
    tiny_config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """srun --ntasks 2 latentspace train (no torchrun): each copy would train the whole run into
    the same folder; half of torchrun's environment is refused too. Nothing is written."""
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(ConfigError, match="SLURM_NTASKS=2"):
        ls.train(tiny_config, tmp_path / "a", quiet=True, report=False)
    argv = ["train", "--dataset", tiny_config.data.dataset, "--out", str(tmp_path / "b")]
    assert main([*argv, "--epochs", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "without torchrun" in error
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node"):
        ls.train(tiny_config, tmp_path / "c", quiet=True, report=False)
    assert not any((tmp_path / name).exists() for name in "abc")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: an ordinary run
    assert distributed.launch() == distributed.Launch()


def test_a_second_writer_is_refused_in_one_line(tiny_run: Path) -> None:
    with runs.lock_run(tiny_run, "train"):
        with pytest.raises(ls.LatentspaceError, match="is in use") as error:
            ls.train(ls.open_run(tiny_run).config, tiny_run, resume=True, quiet=True, report=False)
    assert "\n" not in str(error.value)
