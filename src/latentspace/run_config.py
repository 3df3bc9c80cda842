"""A run's config.json read back: the document checked (format version, sections, image shape)
and a config saved by an older latentspace brought up to today's, so every run that was ever
saved loads with the settings its weights were trained with.

`runs` finds and reads the file (and names a missing or damaged one); this module says what its
contents mean. Settings added after a run was saved take the value that run trained with, never
today's default: the folder test split (added later: an older run had none) and each family's
`SAVED_BEFORE` values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentspace.config import Config, config_from_dict
from latentspace.errors import LatentspaceError, RunError
from latentspace.models import DEFAULT_MODEL, MODELS

__all__ = ["FORMAT_VERSION", "config_from_document", "is_whole"]

FORMAT_VERSION = 1


def is_whole(value: object) -> bool:
    """An int read from JSON (JSON's true and false come back as bools, which are ints too)."""
    return isinstance(value, int) and not isinstance(value, bool)


def config_from_document(
    document: object, path: Path
) -> tuple[Config, tuple[int, int, int], dict[str, Any]]:
    """The config, image shape and other entries of a parsed config.json (`path` is only named
    in the one-line RunError that a document which is not a run config gets)."""
    if not isinstance(document, dict) or "config" not in document or "image_shape" not in document:
        raise RunError(f"{path} lacks 'config' or 'image_shape': not a latentspace run config")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise RunError(
            f"{path} has format version {version}; this latentspace reads {FORMAT_VERSION}"
        )
    sections = document["config"]
    if not isinstance(sections, dict):
        raise RunError(f"{path}: 'config' is {json.dumps(sections)}, not an object of sections")
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise RunError(
                f"{path}: config section {name!r} is {json.dumps(section)}, not an object of "
                "settings"
            )
    sections = _settings_saved_before(_split_saved_before(sections))
    try:
        config = config_from_dict(sections, source=str(path))
    except (LatentspaceError, TypeError, AttributeError) as error:
        raise RunError(f"{path}: {error}") from None
    shape = document["image_shape"]
    if not (
        isinstance(shape, list) and len(shape) == 3 and all(is_whole(v) and v > 0 for v in shape)
    ):
        raise RunError(
            f"{path}: image_shape is {json.dumps(shape)}; it should be three positive whole "
            "numbers [channels, height, width]"
        )
    c, h, w = shape
    info = {k: v for k, v in document.items() if k not in ("config", "image_shape")}
    return config, (c, h, w), info


def _split_saved_before(sections: dict[str, Any]) -> dict[str, Any]:
    """A run made before folders had a test split keeps the validation split it trained with."""
    data = sections.get("data")
    if isinstance(data, dict) and "test_fraction" not in data:
        return {**sections, "data": {**data, "test_fraction": 0.0, "split_by_name": False}}
    return sections


def _settings_saved_before(sections: dict[str, Any]) -> dict[str, Any]:
    """A family's settings added after a run was saved take the value that run trained with
    (its config class's SAVED_BEFORE), not today's default: the weights were made by that."""
    model = sections.get("model")
    family = MODELS.get(str(model.get("name", DEFAULT_MODEL))) if isinstance(model, dict) else None
    if family is None or not isinstance(model, dict):
        return sections
    saved_before = getattr(family.config_class, "SAVED_BEFORE", {})
    missing = {key: value for key, value in saved_before.items() if key not in model}
    return {**sections, "model": {**model, **missing}} if missing else sections
