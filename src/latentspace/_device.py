"""Device and thread selection: the one place that decides where tensors live."""

from __future__ import annotations

import torch

from latentspace.errors import ConfigError

__all__ = ["DEFAULT_CPU_THREADS", "configure_threads", "select_device"]

# Measured on the 2-core development machine (bench/threads.py): one thread trains the MNIST MLP
# VAE as fast as two when the machine is idle, and several times faster when the other core is
# busy (OpenMP spin-waiting). Pass --threads to use more on a bigger, quieter machine.
DEFAULT_CPU_THREADS = 1


def select_device(name: str) -> torch.device:
    """auto: CUDA when present, then Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA GPU is visible; use --device cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("train.device = 'mps' but MPS is not available; use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train.device = {name!r} is not one of: auto, cpu, cuda, mps")
    return torch.device(name)


def configure_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 = the measured default); returns the number in use."""
    wanted = threads if threads > 0 else DEFAULT_CPU_THREADS
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted
