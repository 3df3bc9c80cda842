"""Training one run on many processes (torchrun): who this process is, the process group, its
device, and the few collectives the trainer and the models' steps need.

torchrun (`torch.distributed.run`) starts the processes and tells each, in its environment, its
RANK, WORLD_SIZE and LOCAL_RANK (and TORCHELASTIC_RESTART_COUNT after a restart); everything here
reads that, so one machine with N GPUs, a SLURM allocation and two machines are the same code.
Outside torchrun the world is one process and every function here is a cheap no-op.

Gradients are averaged in the model's own step (`GenerativeModel.optimizer_step` calls
`average_gradients` after its backward pass), with one all-reduce of the flattened gradients of
the parameters that step updates. That is how NVIDIA's StyleGAN2-ADA and StyleGAN3 train GANs on
many GPUs (training_loop.py), and for the same reason: DistributedDataParallel's reducer hooks a
module's forward pass and expects every parameter it saw to receive a gradient in the next
backward pass, which a GAN's phases break (the frozen discriminator in the generator step, the
gradient penalty's double backward, several discriminator steps per generator step). Averaging
in the step keeps each optimizer's parameters apart, so the GAN's two optimizers and its
generator average (updated from identical weights on every rank) stay correct, and no saved
state-dict key changes. Imports nothing of latentspace's but errors and _device, so that the
models may call it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from latentspace._device import select_device
from latentspace.errors import ConfigError, RunError

__all__ = [
    "Launch",
    "agree",
    "all_reduce_sum",
    "average_gradients",
    "broadcast_flag",
    "broadcast_state",
    "describe",
    "device_for",
    "gradient_weight",
    "is_distributed",
    "is_main",
    "launch",
    "process_group",
    "rank",
    "restart_count",
    "world_size",
]

T = TypeVar("T")

# A launcher that starts N copies of a command without torchrun's environment (srun with
# --ntasks N, mpirun): each copy would train the whole run on its own into the same folder.
_OTHER_LAUNCHERS = {
    "SLURM_NTASKS": "SLURM task",
    "OMPI_COMM_WORLD_SIZE": "MPI process",
    "PMI_SIZE": "MPI process",
}
# How long a collective waits for a rank that does not come (a rank that died is noticed at once
# by the transport; this bounds a rank that hangs): long enough for a slow checkpoint.
_TIMEOUT = datetime.timedelta(minutes=30)


@dataclasses.dataclass(frozen=True)
class Launch:
    """What torchrun said about this process: its rank among world_size processes, its rank on
    this machine (which GPU it takes), and how many times torchrun restarted the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restarts: int = 0


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not a whole number") from None


def launch() -> Launch:
    """This process's place in the job, from torchrun's environment. A job started N times by
    another launcher without torchrun is refused in one line: its copies would each train the
    whole run into one folder."""
    world = _int_env("WORLD_SIZE", 1)
    if world <= 1:
        for variable, what in _OTHER_LAUNCHERS.items():
            copies = _int_env(variable, 1)
            if copies > 1:
                raise ConfigError(
                    f"this is one of {copies} copies started as {what}es ({variable}={copies}) "
                    "without torchrun: each would train the whole run into the same folder; "
                    "start one torchrun per machine instead (README: Scale out)"
                )
        return Launch(restarts=_int_env("TORCHELASTIC_RESTART_COUNT", 0))
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            f"WORLD_SIZE={world} but RANK or MASTER_ADDR is not set: start training with "
            "`torchrun --nproc_per_node N -m latentspace train ...`"
        )
    return Launch(
        rank=_int_env("RANK", 0),
        world_size=world,
        local_rank=_int_env("LOCAL_RANK", 0),
        restarts=_int_env("TORCHELASTIC_RESTART_COUNT", 0),
    )


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank: in the process group, else as torchrun set it (0 outside torchrun),
    so that after training only rank 0 still writes the report."""
    if is_distributed():
        return dist.get_rank()
    return _int_env("RANK", 0) if _int_env("WORLD_SIZE", 1) > 1 else 0


def is_main() -> bool:
    """Rank 0: the one process that writes the run, logs and holds the lock."""
    return rank() == 0


def restart_count() -> int:
    """How many times torchrun (--max-restarts) restarted this job: > 0 means resume."""
    return _int_env("TORCHELASTIC_RESTART_COUNT", 0)


def device_for(name: str) -> torch.device:
    """The device this process trains on: train.device chosen as usual, and on CUDA the GPU of
    this process's local rank (one GPU per process)."""
    device = select_device(name)
    if device.type != "cuda" or not is_distributed():
        return device
    index = _int_env("LOCAL_RANK", 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK={index} but this machine has {torch.cuda.device_count()} GPUs: start "
            "at most one process per GPU (--nproc_per_node)"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[Launch]:
    """The process group for the time of a training run when torchrun started several processes
    (NCCL when they train on CUDA, gloo on CPUs), destroyed afterwards; nothing for one process
    or when the caller already made one."""
    where = launch()
    if where.world_size <= 1 or dist.is_initialized():
        yield where
        return
    cuda = select_device(device_name).type == "cuda"
    try:
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=_TIMEOUT,
            device_id=torch.device("cuda", where.local_rank) if cuda else None,
        )
    except (RuntimeError, ValueError) as error:
        raise RunError(
            f"cannot join the {where.world_size} training processes "
            f"({str(error).splitlines()[0]}): check MASTER_ADDR/MASTER_PORT or torchrun's "
            "--rdzv-endpoint"
        ) from None
    try:
        yield where
    finally:
        dist.destroy_process_group()


def describe(device: torch.device, precision: str) -> dict[str, Any]:
    """How a run is trained, for config.json and every epoch record."""
    world = world_size()
    return {
        "world_size": world,
        "backend": dist.get_backend() if is_distributed() else "none",
        "devices": f"{world} x {device.type}",
        "precision": precision,
    }


# ---- collectives ------------------------------------------------------------------------------
_weight: float | None = None


@contextlib.contextmanager
def gradient_weight(local: int, total: int) -> Iterator[None]:
    """Inside: this rank holds `local` of the `total` images of the global batch, and its
    gradients count that much in `average_gradients` (the last batch of an epoch may not split
    evenly; a loss averaged over the batch then still gets the single-process gradient)."""
    global _weight
    previous, _weight = _weight, local / max(total, 1)
    try:
        yield
    finally:
        _weight = previous


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace the gradients of `parameters` by their mean over the ranks (each weighted by its
    share of the global batch, see `gradient_weight`), with one all-reduce: every rank then takes
    the same step. Parameters without a gradient are left out (the same ones on every rank, as
    every rank runs the same code). A no-op on one process."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    weight = _weight if _weight is not None else 1.0 / dist.get_world_size()
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
    dist.all_reduce(flat)
    for grad, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(part.view_as(grad))


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of `values` (a new tensor; `values` is left as it is)."""
    total = values.clone()
    if is_distributed():
        dist.all_reduce(total)
    return total


def broadcast_state(module: nn.Module, *, buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers (or buffers only: batch-norm statistics, counters) copied
    to every rank, as DistributedDataParallel does at its start and before each forward pass."""
    if not is_distributed():
        return
    tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
    for tensor in tensors:
        if tensor.dtype == torch.bool:
            continue
        if tensor.is_contiguous():
            dist.broadcast(tensor, src=0)
        else:  # channels-last weights: the collectives take contiguous tensors
            copy = tensor.contiguous()
            dist.broadcast(copy, src=0)
            tensor.copy_(copy)


def _device() -> torch.device:
    """Where collectives exchange small tensors: the GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_flag(value: int) -> int:
    """Rank 0's `value` on every rank: a decision (stop, go on) all ranks then take together."""
    if not is_distributed():
        return value
    flag = torch.tensor([value], dtype=torch.long, device=_device())
    dist.broadcast(flag, src=0)
    return int(flag.item())


def _broadcast_text(text: str) -> str:
    data = torch.tensor(list(text.encode()[:2000]) or [0], dtype=torch.uint8, device=_device())
    length = broadcast_flag(len(data))
    if not is_main():
        data = torch.zeros(length, dtype=torch.uint8, device=_device())
    dist.broadcast(data, src=0)
    return bytes(data.tolist()).decode(errors="replace").rstrip("\0")


def agree(action: Callable[[], T], what: str) -> T | None:
    """Run `action` on rank 0 only (a write, the lock) and tell every rank whether it worked, so
    that a failure there ends every rank with one line instead of leaving the others waiting in
    their next collective. Rank 0 re-raises its own error; the others raise a RunError naming it.
    Returns rank 0's result there, None elsewhere."""
    if not is_distributed():
        return action()
    result: T | None = None
    failure: BaseException | None = None
    message = ""
    if is_main():
        try:
            result = action()
        except BaseException as error:  # every kind must reach the other ranks, then go on up
            failure = error
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if broadcast_flag(0 if failure is None else 1):
        text = _broadcast_text(message)
        if failure is not None:
            raise failure
        raise RunError(f"rank 0 failed while it {what}: {text}")
    return result
