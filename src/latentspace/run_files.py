"""The files of a run directory and how they are written: their names, atomic writes (a failure
is a one-line StorageError naming the file), the writer's lock, and the clean-up of temporary
files a killed write left. Below `runs.py`, which reads and saves a run's contents with them;
everything here imports nothing of latentspace's but its errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import safetensors

from latentspace.errors import RunError, StorageError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "BEST",
    "CONFIG",
    "LOCK",
    "METRICS",
    "RUN_FILES",
    "STATE",
    "WEIGHTS",
    "atomic_write",
    "cannot_write",
    "check_writable",
    "clean_temporary",
    "lock_run",
]

CONFIG, WEIGHTS, STATE, METRICS, LOCK = (
    "config.json",
    "model.safetensors",
    "trainer_state.pt",
    "metrics.jsonl",
    ".lock",
)
BEST = "best.safetensors"  # with early stopping: the weights of the best validation epoch
# What training writes into a run: a folder holding only these (and their temp files) is a run,
# or one killed before its first commit.
RUN_FILES = frozenset({CONFIG, WEIGHTS, STATE, METRICS, LOCK, BEST, "diagnostics.jsonl"})


def cannot_write(path: Path, error: OSError) -> StorageError:
    reason = error.strerror or str(error)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += f" (is {path.parent} read-only?)"
    return StorageError(f"cannot write {path}: {reason}")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`. A failure
    (read-only folder, full disk) is a one-line StorageError naming `path`; `path` is untouched."""
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as error:
        raise cannot_write(path, error) from None
    except (RuntimeError, safetensors.SafetensorError) as error:
        # how torch.save and safetensors report a failed write (a full disk among them)
        raise StorageError(f"cannot write {path}: {str(error).splitlines()[0]}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def check_writable(path: Path) -> None:
    """A one-line StorageError naming `path` now, rather than after the work that would write it,
    when its folder cannot take a new file (read-only, full)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        raise cannot_write(path, error) from None


def clean_temporary(run_dir: Path) -> None:
    """Remove temp files a killed write of the run's own files left (call it holding the lock:
    another writer's temp files of other names, a report's PNGs, are left alone)."""
    if not run_dir.is_dir():
        return
    for name in RUN_FILES:
        for stray in run_dir.glob(f".{name}.*.tmp"):
            stray.unlink(missing_ok=True)


# ---- the lock -------------------------------------------------------------------------------
# fcntl.flock from the standard library is all the locking a run needs: the kernel releases the
# lock when its holder exits or is killed (so a stale lock never blocks), and a second writer
# learns at once that it cannot have it. No lock library is needed (on Windows runs are not
# locked).
@contextlib.contextmanager
def lock_run(run_dir: Path, action: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the run's lock while writing into it. Another process holding it (for longer than
    `wait` seconds) is a one-line RunError naming its PID and what it is doing."""
    if sys.platform == "win32":
        yield
        return
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise cannot_write(path, error) from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunError(
                        f"{run_dir} is in use: {_holder(path)} is writing into it; wait for it "
                        "to finish or stop it (a killed process leaves no lock behind)"
                    ) from None
                time.sleep(0.02)
        text = f"{os.getpid()} {action}\n".encode()
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        pid, _, action = path.read_text().strip().partition(" ")
    except OSError:
        pid, action = "", ""
    if not pid.isdigit():
        return "another process"
    return f"PID {pid}" + (f" ({action})" if action else "")
