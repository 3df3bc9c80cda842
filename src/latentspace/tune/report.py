"""What a study leaves in DIR: best.toml, trials.csv, the best run and tune-report.html."""

from __future__ import annotations

import csv
import io
import math
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from latentspace import html
from latentspace.config import Config, config_to_dict
from latentspace.errors import ConfigError
from latentspace.runs import atomic_write
from latentspace.tune.space import Space

__all__ = ["config_to_toml", "write_best", "write_report", "write_tables"]

BEST_TOML = "best.toml"
TRIALS_CSV = "trials.csv"
BEST_RUN = "best-run"
REPORT = "tune-report.html"


# ---- best.toml -------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '"none"'  # TOML has no null; config fields that allow None read "none" as None
    return _toml_string(str(value))


# TOML 1.0 basic strings: a quote, a backslash and every control character but tab are escaped
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string; the file is UTF-8, so other characters stay as they are."""
    if any("\ud800" <= c <= "\udfff" for c in text):  # undecodable bytes of a file name
        raise ConfigError(
            f"{text.encode('utf-8', 'backslashreplace').decode()!r} is not valid Unicode and "
            "cannot be written to a TOML file: rename it"
        )
    escaped = "".join(
        _ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " or c == "\x7f" else c) for c in text
    )
    return f'"{escaped}"'


def _toml_comment(line: str) -> str:
    """A comment line: TOML allows no control character but tab in comments."""
    return "# " + "".join(c if c == "\t" or not (c < " " or c == "\x7f") else "?" for c in line)


def config_to_toml(config: Config, header: str = "") -> str:
    """A config file that `latentspace train --config` reads back to the same Config (write it
    as UTF-8)."""
    lines = [_toml_comment(line) for line in header.split("\n")] if header else []
    for section, values in config_to_dict(config).items():
        lines.append(f"\n[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def best_config(study: Any, base: Config, space: Space) -> Config | None:
    """The base config with the best trial's parameters (re-derived from the space)."""
    from optuna.trial import FixedTrial, TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = min(complete, key=lambda t: t.value)
    return space.apply(base, FixedTrial(best.params, best.number))


def write_best(study: Any, out: Path, base: Config, space: Space) -> Path | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    config = best_config(study, base, space)
    if config is None:
        return None
    best = min(complete, key=lambda t: t.value)
    header = (
        f"latentspace tune: best of {len(complete)} completed trials in study {study.study_name!r}\n"
        f"trial {best.number}: {best.value:.6g} (run {best.user_attrs.get('run_dir', '?')})\n"
        f"train it: latentspace train --config {out / BEST_TOML} --out runs/best"
    )
    text = config_to_toml(config, header)
    path = out / BEST_TOML
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# ---- trials.csv ------------------------------------------------------------------------------
def _rows(study: Any) -> tuple[list[str], list[list[Any]]]:
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    header = ["number", "state", "value", "epochs", "seconds", *params, "worker", "run_dir", "note"]
    rows = []
    for t in trials:
        seconds = (
            round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
            if t.datetime_complete and t.datetime_start
            else ""
        )
        worker = f"{t.user_attrs.get('host', '')}:{t.user_attrs.get('pid', '')}".strip(":")
        note = t.user_attrs.get("lost") or t.user_attrs.get("error") or ""
        if t.system_attrs.get("retry_history"):
            note = f"retry of trial {t.system_attrs['retry_history'][0]}"
        rows.append(
            [
                t.number,
                t.state.name,
                "" if t.value is None else t.value,
                t.user_attrs.get("epochs", len(t.intermediate_values)),
                seconds,
                *[t.params.get(p, "") for p in params],
                worker,
                t.user_attrs.get("run_dir", ""),
                note,
            ]
        )
    return header, rows


def write_tables(study: Any, options: Any, base: Config, space: Space) -> None:
    """trials.csv and best.toml: cheap, rewritten after every trial by the worker that ran it."""
    out = Path(options.out)
    header, rows = _rows(study)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(out / TRIALS_CSV, lambda tmp: tmp.write_text(buffer.getvalue()))
    write_best(study, out, base, space)


# ---- the best run and the HTML report --------------------------------------------------------
def copy_best_run(study: Any, out: Path) -> Path | None:
    """Copy the best trial's run directory to DIR/best-run (when it is on this machine)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    source = Path(best.user_attrs.get("run_dir", ""))
    if not (source / "config.json").exists():
        return None
    target = out / BEST_RUN
    staging = out / f".{BEST_RUN}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    (staging / "TRIAL").write_text(f"{best.number}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _figure(plot: Any, path: Path) -> Path | None:
    """Save an Optuna matplotlib plot (an Axes or an array of them) as a PNG."""
    import matplotlib.pyplot as plt
    import numpy as np

    try:
        axes = plot()
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        # e.g. importances need two completed trials with varying parameters
        path.with_suffix(".txt").write_text(str(error))
        return None
    first = np.asarray(axes).flat[0] if isinstance(axes, np.ndarray) else axes
    figure = first.get_figure()
    figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 5))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _state_counts(study: Any) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def write_report(study: Any, options: Any, base: Config, space: Space) -> Path:
    """Everything: tables, best.toml, the best run, and tune-report.html with its figures."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # small studies make Optuna and matplotlib warn (few trials per regime, flat axes)
        warnings.simplefilter("ignore")
        return _write_report(study, options, base, space)


def _write_report(study: Any, options: Any, base: Config, space: Space) -> Path:
    import optuna
    from optuna.visualization import matplotlib as plots

    out = Path(options.out)
    write_tables(study, options, base, space)
    best_run = copy_best_run(study, out)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):
            importances = {}
    # the most important parameters first; slice plots in rows of four stay readable
    params = list(importances)[:8] or sorted({p for t in complete for p in t.params})[:8]
    slices = [params[i : i + 4] for i in range(0, len(params), 4)] or [[]]
    figures: list[tuple[str, list[Any]]] = [
        ("optimisation history", [lambda: plots.plot_optimization_history(study)]),
        (
            "learning curves (pruned trials stop early)",
            [lambda: plots.plot_intermediate_values(study)],
        ),
        ("parameter importances (PED-ANOVA)", [lambda: plots.plot_param_importances(study)]),
        (
            "parallel coordinates (the eight most important parameters)",
            [lambda: plots.plot_parallel_coordinate(study, params=params or None)],
        ),
        (
            "slice plots",
            [lambda chunk=chunk: plots.plot_slice(study, params=chunk) for chunk in slices],
        ),
    ]
    sections: list[tuple[str, str]] = [("Summary", _summary(study, options, best_run))]
    for i, (title, plot_list) in enumerate(figures):
        name = title.split(" (")[0]
        bodies = []
        for j, plot in enumerate(plot_list):
            png = _figure(plot, figures_dir / f"{i}{'abcd'[j % 4]}-{name.replace(' ', '-')}.png")
            bodies.append(
                html.img_tag(png, title if j == 0 else "")
                if png
                else f'<p class="note">not drawn: {html.escape(_why(figures_dir, i, j, name))}</p>'
            )
        sections.append((name.capitalize(), "\n".join(bodies)))
    if importances:
        sections.append(
            (
                "Importances",
                html.table(
                    [(k, f"{v:.3f}") for k, v in importances.items()], ["parameter", "importance"]
                ),
            )
        )
    header, rows = _rows(study)
    sections.append(("Trials", html.table(rows, header)))
    path = out / REPORT
    html.write_page(path, f"latentspace tune: {study.study_name}", sections)
    return path


def _why(figures_dir: Path, index: int, part: int, name: str) -> str:
    note = figures_dir / f"{index}{'abcd'[part % 4]}-{name.replace(' ', '-')}.txt"
    return note.read_text() if note.exists() else "no data yet"


def _summary(study: Any, options: Any, best_run: Path | None) -> str:
    counts = _state_counts(study)
    state_rows = [(state.lower(), n) for state, n in sorted(counts.items())]
    lines = [html.table(state_rows, ["state", "trials"])]
    try:
        best = study.best_trial
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        lines.append(
            f"<p>Best: trial {best.number}, {html.escape(options.objective)} = {best.value:.6g}"
            f"<br>{html.escape(params)}</p>"
        )
        lines.append(
            f"<p>Train it again: <code>latentspace train --config {html.escape(Path(options.out) / BEST_TOML)} --out runs/best</code>"
            + (f"; its run is in <code>{html.escape(best_run)}</code>" if best_run else "")
            + "</p>"
        )
    except ValueError:
        lines.append('<p class="warn">No trial has completed yet.</p>')
    from latentspace.tune.study import _safe_url

    storage = (
        _safe_url(options.storage)
        if options.storage
        else f"journal file {Path(options.out) / 'study.journal'}"
    )
    lines.append(
        f'<p class="note">study {html.escape(study.study_name)} in {html.escape(storage)}; '
        f"sampler {html.escape(options.sampler)}, pruner {html.escape(options.pruner)}</p>"
    )
    return "\n".join(lines)
