"""The TensorBoard logger: an epoch's scalars, the pictures (`pictures.Pictures`) and, at the
end of a run, its hyperparameters and the held-out images' codes as an embedding."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from latentspace.dashboards.pictures import Pictures
from latentspace.dashboards.records import (
    TrainerView,
    committed_epochs,
    epoch_scalars,
    flat_config,
    require,
)
from latentspace.data import to_float
from latentspace.errors import ConfigError

__all__ = ["TensorBoardLogger"]


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
        self.pictures: Pictures | None = None

    def on_train_start(self, trainer: TrainerView) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = self.log_dir or trainer.run_dir / "tensorboard"
        # a resume continues the folder; events of epochs past the resumed one (written by an
        # epoch that was never committed) are dropped by TensorBoard's purge
        self.writer = SummaryWriter(str(self.log_dir), purge_step=trainer.epoch + 1)
        self.pictures = Pictures(trainer, *self.sizes)

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
