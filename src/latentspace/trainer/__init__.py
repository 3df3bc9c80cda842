"""The generic trainer: epochs, validation, early stopping, checkpoints, progress and callbacks.

`loop.py` holds `Trainer` (the loop, validation, early stopping), `checkpoint.py` its state and
the one commit point of each checkpoint, `progress.py` what it shows while it runs, and
`callbacks.py` the hooks through which everything else joins a run. `latentspace.train.train`
(a run from a config) drives it; `from latentspace.train import Trainer, StopTraining` keeps
working, and is the import to use.
"""

from __future__ import annotations

from latentspace.trainer.callbacks import Callback, StopTraining
from latentspace.trainer.loop import Trainer, average_terms

__all__ = ["Callback", "StopTraining", "Trainer", "average_terms"]
