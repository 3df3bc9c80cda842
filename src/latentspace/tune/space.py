"""The search space: which settings a study varies, over which ranges, and how a trial's
suggestions become `section.key=value` overrides of the base config.

A space is a mapping from config keys (`train.lr`, `model.hidden_sizes`, ...) to one entry each:

- a plain value (`epochs = 20`): fixed for every trial;
- `{ low, high, log = false, step }`: a float or int range (ints when the config field is an int);
- `{ low, high, log = true, off = true }`: as above, plus "off" (0.0), a separate choice, so that
  an L1/L2 penalty can be absent as well as small;
- `{ choices = [...] }`: one of the listed values;
- for `model.hidden_sizes` only, `{ layers = [1, 3], units = [32, 1024], log = true }`: the number
  of hidden layers, then the width of each layer (the widths exist only for the layers drawn).

The default space (`DEFAULT_SPACE`, documented in the shipped tune-space config: `latentspace
configs show tune-space`) covers the settings users ask about; a space file overrides its entries
one by one, `exclude = [...]` removes entries (the base config's value is then used), and
`replace = true` starts from an empty space.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from latentspace.config import Config, apply_overrides
from latentspace.errors import ConfigError
from latentspace.settings import OPTIMIZERS

__all__ = [
    "DEFAULT_SPACE",
    "Space",
    "load_space",
    "parse_space",
]


class _Trial(Protocol):
    """What a space needs from an Optuna trial (`optuna.Trial` and `optuna.trial.FixedTrial`)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = ..., log: bool = ...
    ) -> float: ...
    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = ..., log: bool = ...
    ) -> int: ...
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


# The default space. Ranges are wide enough for MNIST-sized MLP models and narrow enough that most
# trials train; epochs is the budget of one trial (the pruner's maximum resource).
DEFAULT_SPACE: dict[str, Any] = {
    "train.lr": {"low": 1e-4, "high": 3e-2, "log": True},
    "train.batch_size": {"choices": [32, 64, 128, 256]},
    "train.epochs": 20,
    "train.l1": {"low": 1e-8, "high": 1e-3, "log": True, "off": True},
    "train.l2": {"low": 1e-8, "high": 1e-2, "log": True, "off": True},
    "train.optimizer": {"choices": sorted(OPTIMIZERS)},
    "model.hidden_sizes": {"layers": [1, 3], "units": [32, 1024], "log": True},
    "model.activation": {"choices": ["relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid"]},
    "model.latent_dim": {"low": 2, "high": 64, "log": True},
}

_RANGE_KEYS = {"low", "high", "log", "step", "off"}
_HIDDEN_KEYS = {"layers", "units", "log"}


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One key of the space. `kind` is fixed | float | int | choice | hidden."""

    key: str
    kind: str
    value: Any = None  # fixed
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    off: bool = False  # float/int ranges: "off" (0) is a separate choice
    choices: tuple[Any, ...] = ()
    layers: tuple[int, int] = (1, 1)  # hidden: range of the number of layers

    def suggest(self, trial: _Trial) -> str:
        """Ask the trial for a value; returns the override `key=value`."""
        return f"{self.key}={_text(self._draw(trial))}"

    def _draw(self, trial: _Trial) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "hidden":
            count = trial.suggest_int(f"{self.key}.layers", *self.layers)
            return tuple(
                trial.suggest_int(
                    f"{self.key}.{i + 1}", int(self.low), int(self.high), log=self.log
                )
                for i in range(count)
            )
        if self.off and not trial.suggest_categorical(f"{self.key}.on", [False, True]):
            return 0
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """Values that must all be valid configs: the bounds, every choice, the fixed value."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "hidden":
            return [(int(self.low),) * self.layers[0], (int(self.high),) * self.layers[1]]
        values: list[Any] = [self.low, self.high]
        if self.kind == "int":
            values = [int(v) for v in values]
        return [*values, 0] if self.off else values


def _text(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclasses.dataclass(frozen=True)
class Space:
    """An ordered set of entries; `suggest(trial)` turns a trial into config overrides."""

    entries: tuple[_Entry, ...]
    source: str = "default space"

    def suggest(self, trial: _Trial) -> list[str]:
        return [entry.suggest(trial) for entry in self.entries]

    def apply(self, base: Config, trial: _Trial) -> Config:
        return apply_overrides(base, self.suggest(trial))

    def max_epochs(self, base: Config) -> int:
        """The largest number of epochs a trial can train: the pruner's maximum resource."""
        for entry in self.entries:
            if entry.key == "train.epochs":
                return int(max(entry.extremes()))
        return base.train.epochs

    def describe(self) -> dict[str, Any]:
        """The space as plain data (stored with the study to detect a changed space on resume)."""
        return {e.key: _describe(e) for e in self.entries}

    def check(self, base: Config) -> None:
        """Every bound and choice must give a valid config: fail before any trial runs."""
        for entry in self.entries:
            for value in entry.extremes():
                try:
                    apply_overrides(base, [f"{entry.key}={_text(value)}"])
                except ConfigError as error:
                    raise ConfigError(f"{self.source}: {entry.key} = {value!r}: {error}") from None


def _describe(entry: _Entry) -> Any:
    if entry.kind == "fixed":
        return entry.value
    if entry.kind == "choice":
        return {"choices": list(entry.choices)}
    if entry.kind == "hidden":
        return {"layers": list(entry.layers), "units": [entry.low, entry.high], "log": entry.log}
    result: dict[str, Any] = {"low": entry.low, "high": entry.high, "log": entry.log}
    if entry.step is not None:
        result["step"] = entry.step
    if entry.off:
        result["off"] = True
    return result


def _field_type(base: Config, key: str, source: str) -> Any:
    section, _, field = key.partition(".")
    owner = {"data": base.data, "model": base.model, "train": base.train}.get(section)
    hints = typing.get_type_hints(type(owner)) if owner is not None else {}
    if not field or field not in hints or field == "name":
        valid = sorted(
            f"{name}.{f}"
            for name, obj in (("data", base.data), ("model", base.model), ("train", base.train))
            for f in typing.get_type_hints(type(obj))
            if f != "name"
        )
        raise ConfigError(f"{source}: unknown key {key!r}; valid keys: {', '.join(valid)}")
    return hints[field]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    return _number(value[0], where), _number(value[1], where)


def _check_range(low: float, high: float, log: bool, where: str) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"{where}: impossible range low={low:g} > high={high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0 (got {low:g}); use off = true for 0")


def _entry(key: str, spec: Any, base: Config, source: str) -> _Entry:
    tp = _field_type(base, key, source)
    where = f"{source}: {key}"
    if not isinstance(spec, Mapping):
        return _Entry(key, "fixed", value=spec)
    spec = dict(spec)
    if key == "model.hidden_sizes" and set(spec) & {"layers", "units"}:
        unknown = sorted(set(spec) - _HIDDEN_KEYS)
        if unknown or not {"layers", "units"} <= set(spec):
            raise ConfigError(
                f"{where}: write {{ layers = [1, 3], units = [32, 1024], log = true }}"
            )
        layers = _pair(spec["layers"], f"{where}.layers")
        units = _pair(spec["units"], f"{where}.units")
        log = bool(spec.get("log", False))
        _check_range(*layers, False, f"{where}.layers")
        _check_range(*units, log, f"{where}.units")
        if layers[0] < 1 or units[0] < 1:
            raise ConfigError(f"{where}: layers and units must be at least 1")
        return _Entry(
            key,
            "hidden",
            low=units[0],
            high=units[1],
            log=log,
            layers=(int(layers[0]), int(layers[1])),
        )
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(
                f"{where}: choices cannot be combined with {sorted(set(spec) - {'choices'})}"
            )
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if any(isinstance(c, list | dict) for c in choices):
            choices = [_text(c) if isinstance(c, list) else c for c in choices]
        return _Entry(key, "choice", choices=tuple(choices))
    unknown = sorted(set(spec) - _RANGE_KEYS)
    if unknown or "low" not in spec or "high" not in spec:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r}"
            if unknown
            else f"{where}: a range needs low and high (or write choices = [...], or a fixed value)"
        )
    low, high = _number(spec["low"], where), _number(spec["high"], where)
    log = bool(spec.get("log", False))
    _check_range(low, high, log, where)
    step = None if spec.get("step") is None else _number(spec["step"], f"{where}.step")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be > 0 and cannot be combined with log")
    inner = (
        typing.get_args(tp)[0] if typing.get_args(tp) and type(None) in typing.get_args(tp) else tp
    )
    if inner not in (int, float):
        raise ConfigError(f"{where}: {key} is not a number; give choices = [...] instead")
    kind = "int" if inner is int else "float"
    return _Entry(
        key, kind, low=low, high=high, log=log, step=step, off=bool(spec.get("off", False))
    )


def _flatten(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """{"train": {"lr": {...}}} and {"train.lr": {...}} both give {"train.lr": {...}}."""
    flat: dict[str, Any] = {}
    for section, value in raw.items():
        if "." in section:
            flat[section] = value
        elif section in ("data", "model", "train") and isinstance(value, Mapping):
            for field, spec in value.items():
                flat[f"{section}.{field}"] = spec
        else:
            raise ConfigError(
                f"{source}: unknown entry {section!r}; use [data], [model], [train], exclude, replace"
            )
    return flat


def _defaults_for(base: Config) -> dict[str, Any]:
    """The default space's entries that the base config's family has a setting for: a sentence
    VAE has no hidden_sizes or activation, so its study searches the rest (a key a space file
    names is still checked, in one line)."""
    owners = {"data": base.data, "model": base.model, "train": base.train}
    return {
        key: spec
        for key, spec in DEFAULT_SPACE.items()
        if key.partition(".")[2] in typing.get_type_hints(type(owners[key.partition(".")[0]]))
    }


def parse_space(raw: Mapping[str, Any], base: Config, source: str = "space") -> Space:
    """Merge `raw` (a parsed space file) into the default space and check it against `base`."""
    raw = dict(raw)
    replace = raw.pop("replace", False)
    exclude = raw.pop("exclude", [])
    if not isinstance(replace, bool) or not isinstance(exclude, list):
        raise ConfigError(f'{source}: write replace = true|false and exclude = ["train.lr", ...]')
    merged: dict[str, Any] = {} if replace else _defaults_for(base)
    for key in exclude:
        _field_type(base, str(key), source)
        merged.pop(str(key), None)
    merged.update(_flatten(raw, source))
    space = Space(tuple(_entry(k, v, base, source) for k, v in merged.items()), source=source)
    space.check(base)
    return space


def load_space(path: str | Path | None, base: Config) -> Space:
    """The default space, or the default space overridden by the TOML file at `path`."""
    if path is None:
        return parse_space({}, base, "default space")
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"space file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"space file {path} is not valid TOML: {error}") from None
    return parse_space(raw, base, str(path))
