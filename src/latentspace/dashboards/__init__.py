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

This package's modules: `tensorboard_logger.py` the TensorBoard logger and `pictures.py` the
pictures it shows; `mlflow_logger.py` the MLflow logger and its store; `loggers.py` the choice of
loggers by name (`make_loggers`, `close_loggers`); `records.py` what both loggers read of a run
(flat params, an epoch's scalars, the committed epochs). This module only re-exports them.
"""

from __future__ import annotations

from latentspace.dashboards.loggers import LOGGERS, close_loggers, make_loggers
from latentspace.dashboards.mlflow_logger import RUN_ID_FILE, MLflowLogger, prepare_mlflow_store
from latentspace.dashboards.records import epoch_scalars, flat_config
from latentspace.dashboards.tensorboard_logger import TensorBoardLogger

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
