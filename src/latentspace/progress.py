"""Feedback on long work: what is being done, n of N, and the time left for the whole job.

    with Progress("report", 9) as progress:
        progress.phase("samples")      # report 4/9: samples (about 12 s left)
        ...

On a terminal a tqdm bar; anywhere else (a log file, CI, a pipe) one line per phase on stderr, so
a log stays readable; `quiet=True`, or any code inside `silenced()`, prints nothing. Nothing here
knows what the work is: trainers, reports and experiments count their own phases.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

__all__ = [
    "Progress",
    "command_plan",
    "format_duration",
    "is_silenced",
    "on_terminal",
    "parallel_seconds_left",
    "planned_after",
    "silenced",
    "time_left",
]

_SILENCED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "latentspace_progress_silenced", default=False
)
# when the whole command plans to end (a time.perf_counter() value), for work that is one part of
# a budgeted command (`experiment all`) and must say the time left for all of it
_PLANNED_END: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "latentspace_progress_planned_end", default=None
)


@contextlib.contextmanager
def silenced(flag: bool = True) -> Iterator[None]:
    """Inside it, every Progress is quiet (a command's --quiet reaches work it calls)."""
    token = _SILENCED.set(_SILENCED.get() or flag)
    try:
        yield
    finally:
        _SILENCED.reset(token)


def is_silenced() -> bool:
    return _SILENCED.get()


@contextlib.contextmanager
def command_plan(seconds: float) -> Iterator[None]:
    """Inside it, the command plans to take `seconds` from now in all (its budget)."""
    token = _PLANNED_END.set(time.perf_counter() + seconds)
    try:
        yield
    finally:
        _PLANNED_END.reset(token)


def planned_after(end: float) -> float:
    """Seconds the command plans to spend after `end` (a time.perf_counter() value), when one
    part of it plans to end then: 0 outside `command_plan`."""
    planned = _PLANNED_END.get()
    return 0.0 if planned is None else max(0.0, planned - end)


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default stderr) is a terminal, where a redrawn bar reads well."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or detached stream
        return False


def format_duration(seconds: float) -> str:
    """A rounded duration a person reads at a glance: 8 s, 45 s, 3 min 20 s, 1 h 05 min."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    if seconds < 600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def time_left(seconds: float | None) -> str:
    """' (about 3 min left)', or '' when there is no estimate yet."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    return f" (about {format_duration(seconds)} left)"


def parallel_seconds_left(
    durations: Sequence[float],
    left: int,
    workers: int = 1,
    deadline_left: float | None = None,
) -> float | None:
    """Seconds until `left` more units of work are done by `workers` running side by side, at
    the mean duration of the units finished so far (`durations`): they go in rounds of
    `workers`. Never more than `deadline_left` (a budget's seconds left). None when neither says
    anything yet (no unit finished, no deadline)."""
    estimate = None
    if durations:
        estimate = math.ceil(max(0, left) / max(1, workers)) * sum(durations) / len(durations)
    if deadline_left is not None:
        deadline_left = max(0.0, deadline_left)
        estimate = deadline_left if estimate is None else min(estimate, deadline_left)
    return estimate


class Progress:
    """One long piece of work counted in `total` units: steps (trials, figures) or, with
    `unit="batch"`, batches that several phases share.

    `phase(label)` says what starts now: on a terminal it becomes the bar's text, elsewhere one
    line, `what n/N: label (about X left)` (n: the step starting) or `what: label, batch n/N
    (about X left)` (n: the batches done). `advance(n)` counts finished units (the bar moves; no
    line). The time left is extrapolated from the units finished so far, unless the caller, who
    may know better (a budget, a planned cost), passes `left=`."""

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "step",
        quiet: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.what = what
        self.total = max(0, int(total))
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet or is_silenced()
        self.done = 0
        self.started = time.perf_counter()
        self.bar: tqdm | None = None
        if not self.quiet and on_terminal(self.stream):
            self.bar = tqdm(
                total=self.total,
                desc=what,
                unit=unit,
                leave=False,
                dynamic_ncols=True,
                file=self.stream,
                bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}",
            )

    def estimate(self) -> float | None:
        """Seconds left, extrapolated from the finished steps (None before the first)."""
        if self.done == 0 or self.total == 0:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed / self.done * max(0, self.total - self.done)

    def phase(self, label: str, *, left: float | None = None) -> None:
        """What starts now; counted as step done + 1 of total."""
        if self.quiet:
            return
        left = self.estimate() if left is None else left
        if self.bar is not None:
            self.bar.set_description_str(f"{self.what}: {label}", refresh=True)
            return
        number = min(self.done + 1, self.total) if self.unit == "step" else self.done
        where = (
            f"{self.what} {number}/{self.total}: {label}"
            if self.unit == "step"
            else f"{self.what}: {label}, {self.unit} {number}/{self.total}"
        )
        self.line(where + time_left(left))

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def line(self, text: str) -> None:
        """One line on the stream (above the bar on a terminal), unless quiet."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
