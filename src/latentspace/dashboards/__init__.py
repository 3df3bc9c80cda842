"""Live dashboards: trainer callbacks that log a run to TensorBoard or to a local MLflow store.

    import latentspace as ls
    from latentspace.dashboards import MLflowLogger, TensorBoardLogger

    ls.train(config, "runs/vae", callbacks=[TensorBoardLogger(), MLflowLogger()])
    # tensorboard --logdir runs/vae/tensorboard --host 127.0.0.1
    # mlflow ui --backend-store-uri sqlite:///runs/vae/mlflow.db --host 127.0.0.1 (full mlflow)

Both log once per epoch, from the epoch's record (the numbers the trainer already read to the
host), never per batch: a GPU is not made to wait for a number. The pictures (samples from fixed
codes, reconstructions of a fixed batch of held-out images) go through the model contract
(`generate`, `encode`, `decode`) in eval mode without touching the global random state, so a run
trains to the same weights with or without them. An encoder too slow to run every epoch (an
optimisation, such as GAN inversion) is found by timing it once: its reconstructions are left
out and the embedding gets the images its budget affords. Resuming a run continues its
TensorBoard folder (events past the resumed epoch are purged) and its MLflow run (its id is kept
in RUN/mlflow-run-id). tensorboard and mlflow are imported only when a logger starts.

This module holds the TensorBoard logger and the pictures it shows, and chooses loggers by name
(`make_loggers`, `close_loggers`); `mlflow_logger.py` holds the MLflow logger and its store,
`records.py` what both read of a run (flat params, an epoch's scalars, the committed epochs).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from latentspace.analysis.evaluate import affordable_encodes
from latentspace.dashboards.mlflow_logger import RUN_ID_FILE, MLflowLogger, prepare_mlflow_store
from latentspace.dashboards.records import (
    TrainerView,
    committed_epochs,
    epoch_scalars,
    flat_config,
    require,
)
from latentspace.data import ImageSet, to_float
from latentspace.errors import ConfigError
from latentspace.imaging import image_grid

__all__ = [
    "LOGGERS",
    "RUN_ID_FILE",
    "MLflowLogger",
    "TensorBoardLogger",
    "close_loggers",
    "epoch_scalars",
    "flat_config",
    "make_loggers",
    "prepare_mlflow_store",
]

LOGGERS = ("tensorboard", "mlflow")
_SAMPLES_SEED = 0  # the codes of the sample grid: the same every epoch and on resume
_EMBEDDING_BUDGET_S = 10.0  # the most seconds the end-of-run embedding may spend encoding


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no batch-norm statistics updated, no dropout) for a look at the model."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class _Pictures:
    """What a logger shows of the model: `samples` images from fixed codes, reconstructions of
    the first `reconstructions` held-out images (the run's validation images, else its first
    training images), codes of up to `embedding` of them.

    The encoder is timed once, at the start: the reconstructions are drawn each epoch only if
    they cost at most `encode_budget_s` or 1% of the first epoch's time (an encoder that is an
    optimisation does not fit), and the embedding gets what _EMBEDDING_BUDGET_S affords."""

    def __init__(
        self,
        trainer: TrainerView,
        samples: int,
        reconstructions: int,
        embedding: int,
        encode_budget_s: float,
    ) -> None:
        held = trainer.val_set
        n = max(reconstructions, embedding, 2)
        if held is not None:
            self.images = held.images[:n].cpu()
            self.labels = _label_names(held, n)
        else:
            self.images = trainer.train_batches.images[:n].cpu()
            self.labels = None
        self.samples = samples
        self.wanted = min(reconstructions, len(self.images))
        self.encode_budget_s = encode_budget_s
        self.per_second = self._encodes_per_second(trainer) if self.wanted or embedding else 0.0
        self.reconstructions: int | None = None if self.wanted else 0  # decided after epoch 1
        self.batch: torch.Tensor | None = None
        self.embedding = min(
            embedding, len(self.images), int(self.per_second * _EMBEDDING_BUDGET_S)
        )

    def _encodes_per_second(self, trainer: TrainerView) -> float:
        model, probe = trainer.model, to_float(self.images[:2].to(trainer.device))
        with _evaluating(model):
            try:
                model.encode(probe[:1])  # warm-up: a first call pays for kernel choices
            except NotImplementedError:
                return 0.0
            return float(affordable_encodes(model, probe, 1.0))

    def reconstruction_count(self, trainer: TrainerView, epoch_seconds: float) -> int:
        """How many reconstructions each epoch shows: decided once, on the first epoch's time."""
        if self.reconstructions is None:
            cost = self.wanted / max(self.per_second, 1e-9)
            fits = cost <= max(self.encode_budget_s, 0.01 * epoch_seconds)
            self.reconstructions = self.wanted if fits else 0
            if not fits and self.per_second > 0 and not trainer.quiet:  # 0: cannot encode
                trainer.log(
                    f"dashboards: encoding {self.wanted} images would take about {cost:.1f} s "
                    f"each epoch ({epoch_seconds:.1f} s of training): no reconstructions"
                )
        return self.reconstructions

    def sample_grid(self, model: Any) -> Image.Image:
        generator = torch.Generator().manual_seed(_SAMPLES_SEED)
        return image_grid(model.generate(self.samples, generator=generator).float(), scale=1)

    def reconstruction_grid(self, model: Any, device: torch.device) -> Image.Image:
        """Rows of 8 held-out images, each followed by the row of their reconstructions."""
        if self.batch is None:  # once, on the model's device
            self.batch = to_float(self.images[: self.reconstructions or 0].to(device))
        x = self.batch
        with _evaluating(model):
            x_hat = model.decode(model.encode(x)).float()
        rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], x_hat[i : i + 8])]
        return image_grid(torch.cat(rows), nrow=min(8, len(x)), scale=1)

    def codes(self, model: Any, device: torch.device) -> torch.Tensor:
        """Codes (N, D) of the first `embedding` images, on the CPU."""
        x = to_float(self.images[: self.embedding])
        with _evaluating(model):
            return torch.cat([model.encode(b.to(device)).cpu() for b in x.split(500)])


def _label_names(images: ImageSet, n: int) -> list[str] | None:
    if images.labels is None:
        return None
    labels = images.labels[:n].tolist()
    classes = images.classes
    return [classes[i] if classes and 0 <= i < len(classes) else str(i) for i in labels]


def _image_summary(tag: str, picture: Image.Image) -> Any:
    """A TensorBoard image summary of `picture` at its own size (TensorBoard enlarges it on
    screen), as a JPEG of quality 90: it runs every epoch, and every byte of an event costs, as
    TensorBoard's writer checksums records in pure Python (CRC-32C). A JPEG of blurry samples is
    smaller than their PNG and many times faster to encode (figures in docs/dashboards.md);
    SummaryWriter.add_image would also make a grey picture RGB, through floats."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    image = Summary.Image(
        height=picture.height,
        width=picture.width,
        colorspace=len(picture.getbands()),
        encoded_image_string=buffer.getvalue(),
    )
    return Summary(value=[Summary.Value(tag=tag, image=image)])


# ---- TensorBoard --------------------------------------------------------------------------------
class TensorBoardLogger:
    """Trainer callback writing TensorBoard events into `log_dir` (default RUN/tensorboard).

    Each epoch: every train and validation term (`train/total`, `val/kl`, ...), lr, samples/s
    and seconds as scalars at step = epoch; a grid of `samples` images generated from the same
    codes every epoch; `reconstructions` held-out images over their reconstructions (left out
    when the encoder is too slow: `encode_budget_s` seconds per epoch). At the end: the codes of
    up to `embedding` held-out images for the projector (labels and thumbnails), and the config
    with the final terms as hparams."""

    def __init__(
        self,
        log_dir: str | Path | None = None,
        *,
        samples: int = 64,
        reconstructions: int = 32,
        embedding: int = 1000,
        encode_budget_s: float = 0.1,
    ) -> None:
        if not 1 <= samples <= 64 or reconstructions < 0 or embedding < 0:
            raise ConfigError(
                f"TensorBoardLogger: samples = {samples} must be 1-64, reconstructions = "
                f"{reconstructions} and embedding = {embedding} at least 0"
            )
        require("tensorboard", "TensorBoard logging")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.sizes = (samples, reconstructions, embedding, encode_budget_s)
        self.writer: Any = None
        self.pictures: _Pictures | None = None

    def on_train_start(self, trainer: TrainerView) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = self.log_dir or trainer.run_dir / "tensorboard"
        # a resume continues the folder; events of epochs past the resumed one (written by an
        # epoch that was never committed) are dropped by TensorBoard's purge
        self.writer = SummaryWriter(str(self.log_dir), purge_step=trainer.epoch + 1)
        self.pictures = _Pictures(trainer, *self.sizes)

    def on_checkpoint(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        """Before the epoch is committed: its events belong to the checkpoint (flushed now)."""
        if self.writer is None or self.pictures is None:
            return
        step = int(record["epoch"])
        for name, value in epoch_scalars(record).items():
            self.writer.add_scalar(name, value, step)
        pictures, model = self.pictures, trainer.model
        events = self.writer.file_writer
        events.add_summary(_image_summary("samples", pictures.sample_grid(model)), step)
        if pictures.reconstruction_count(trainer, float(record["seconds"])):
            grid = pictures.reconstruction_grid(model, trainer.device)
            events.add_summary(_image_summary("reconstructions", grid), step)
        self.writer.flush()

    def on_train_end(self, trainer: TrainerView) -> None:
        if self.writer is None or self.pictures is None:
            return
        self._embedding(trainer)
        epochs = committed_epochs(trainer)
        if epochs:
            final = epochs[-1].get("val") or epochs[-1]["train"]
            metrics = {f"hparams/{k}": float(v) for k, v in final.items()}
            self.writer.add_hparams(
                flat_config(trainer.config), metrics, run_name="hparams", global_step=trainer.epoch
            )
        self.close()

    def _embedding(self, trainer: TrainerView) -> None:
        if self.pictures is None or self.log_dir is None or self.pictures.embedding < 2:
            return
        tag = "held_out_codes"
        # a run resumed to the epoch it already had writes the same step again: replace it
        shutil.rmtree(self.log_dir / f"{trainer.epoch:05d}" / tag, ignore_errors=True)
        n = self.pictures.embedding
        labels = self.pictures.labels
        self.writer.add_embedding(
            self.pictures.codes(trainer.model, trainer.device),
            metadata=labels[:n] if labels is not None else None,
            label_img=to_float(self.pictures.images[:n]),
            global_step=trainer.epoch,
            tag=tag,
        )

    def close(self) -> None:
        """Flush and close the event files (on_train_end does; call it after an interruption)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def close_loggers(loggers: Sequence[object], run_dir: str | Path, status: str = "KILLED") -> None:
    """Call after `train` returned or raised (in a `finally`): uploads the run's files, the report
    written after training included, to MLflow, and closes every logger that on_train_end did not
    (an interrupted or pruned run's MLflow run ends with `status`; its TensorBoard events are
    flushed)."""
    for logger in loggers:
        if isinstance(logger, MLflowLogger):
            logger.log_run_files(run_dir)
            logger.close(status)
        elif isinstance(logger, TensorBoardLogger):
            logger.close()


# ---- choosing loggers by name -------------------------------------------------------------------
def make_loggers(
    names: Sequence[str],
    run_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = "latentspace",
) -> list[object]:
    """The callbacks that `--log NAME` (repeatable) asks for, for the run in `run_dir`:
    "tensorboard" writes RUN/tensorboard, "mlflow" the MLflow store `tracking_uri` (default
    sqlite:///RUN/mlflow.db) under `experiment`. An unknown name, or a missing package, is a
    one-line ConfigError."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--log {name!r} is not a logger: choose from {', '.join(LOGGERS)}")
    folder = Path(run_dir)
    loggers: list[object] = []
    for name in dict.fromkeys(names):  # --log twice logs once
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(folder / "tensorboard"))
        else:
            loggers.append(MLflowLogger(tracking_uri, experiment))
    return loggers
