"""Training diagnostics: what happens inside the network, measured cheaply and said in plain words.

A `Diagnostics` callback (on by default in `latentspace.train`) measures, per weighted layer
(Linear / Conv / ConvTranspose, named "encoder layer 1", "decoder layer 3", ...):

- the gradient norm of its weight on sampled steps (after clipping, as the optimizer saw it),
- the norms of its weight and bias at the end of each epoch,
- the update-to-weight ratio ||w_after - w_before|| / ||w_before|| of a sampled step (the last
  step of every epoch, and every `every` steps), from a copy of the weights taken just before that
  step only,
- the fraction of its ReLU units that never fire on a fixed validation batch (dead ReLU), and the
  fraction of its Sigmoid/Tanh outputs in saturation (slope below 5% of its peak),

and, per epoch, the first-to-last-layer gradient ratio, the train/validation gap and whether
validation loss has turned upward. Forward hooks are attached only for the one validation pass at
the end of an epoch; nothing runs on unsampled steps. The callback uses no random numbers: the
validation batch is the first `val_images` validation images and the pass is the model's
`validation_step` on a fixed seed inside `torch.random.fork_rng`, so the training run's random
stream is untouched and a resumed run still equals an uninterrupted one.

Each epoch appends one JSON object to `diagnostics.jsonl` in the run (the file is rewritten
atomically). A warning is raised the first time its condition becomes true in a run (each
record's "active" list says which conditions hold at that epoch), logged like the trainer's epoch
lines and added to the epoch record's "warnings"; each names the measured number and one
suggestion. Thresholds: `Thresholds`, explained in docs/diagnostics.md.

Modules: `measure` finds the weighted layers and measures activations; `rules` holds
`Thresholds`, `Finding` and the rules that turn an epoch's record into warnings (`detect`);
`callback` is the `Diagnostics` trainer callback that writes diagnostics.jsonl; `reading` reads a
finished run (`read_diagnostics`, `summarize`, `diagnostics_figures`).
"""

from __future__ import annotations

from latentspace.diagnostics.callback import Diagnostics
from latentspace.diagnostics.measure import Layer, find_layers, measure_activations
from latentspace.diagnostics.reading import (
    DIAGNOSTICS,
    diagnostics_figures,
    read_diagnostics,
    summarize,
)
from latentspace.diagnostics.rules import Finding, Thresholds, detect

__all__ = [
    "DIAGNOSTICS",
    "Diagnostics",
    "Finding",
    "Layer",
    "Thresholds",
    "detect",
    "diagnostics_figures",
    "find_layers",
    "measure_activations",
    "read_diagnostics",
    "summarize",
]
