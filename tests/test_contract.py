"""The model contract seen from outside `models/`: no module names a family or tests a model's
class, the package's layers import each other one way only, and what a family declares (its
monitored term, its likelihood) is what the trainer and the tuner act on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import latentspace as ls
from latentspace.cli import main
from latentspace.config import Config
from latentspace.errors import ConfigError
from latentspace.models import MODELS

PACKAGE = Path(ls.__file__).parent


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name, parsed."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _family_words() -> tuple[set[str], set[str], set[str]]:
    """(family names, family and family-config class names, modules that define a family)."""
    names = {name.lower() for name in MODELS}
    classes = {cls.__name__ for cls in MODELS.values()}
    classes |= {cls.config_class.__name__ for cls in MODELS.values()}
    modules = {cls.__module__ for cls in MODELS.values()}
    return names, classes, modules


def _family_mentions(tree: ast.Module) -> list[str]:
    names, classes, modules = _family_words()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.lower() in names:
                found.append(f"line {node.lineno}: the string {node.value!r}")
        elif isinstance(node, ast.Name) and node.id in classes:
            found.append(f"line {node.lineno}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in classes:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            imported = {alias.name for alias in node.names}
            if node.module in modules or imported & classes:
                found.append(f"line {node.lineno}: from {node.module} import {sorted(imported)}")
    return found


def test_no_module_outside_models_names_a_family_or_tests_a_models_class() -> None:
    """Knowledge of the families stays in `latentspace.models`; the package's root only
    re-exports the public classes for `import latentspace as ls`."""
    offenders = {
        name: mentions
        for name, tree in _modules().items()
        if not name.startswith("latentspace.models") and name != "latentspace"
        for mentions in [_family_mentions(tree)]
        if mentions
    }
    assert offenders == {}


def test_the_family_check_sees_what_it_looks_for() -> None:
    """The check above catches a string, a class test and an import of a family (else it could
    pass by seeing nothing)."""
    name = next(iter(MODELS))
    cls = MODELS[name]
    source = (
        f"from {cls.__module__} import {cls.__name__}\n"
        f"if config.model_name == {name!r}: pass\n"
        f"ok = isinstance(model, {cls.__name__})\n"
    )
    assert len(_family_mentions(ast.parse(source))) == 3


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules `tree` imports, at any depth: imports inside functions and under
    `if TYPE_CHECKING:` count too (a cycle for the type checker is still two modules that
    know each other)."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


def _layer(module: str) -> str:
    """latentspace.models.vae -> models; latentspace.train -> train; latentspace -> (root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's nodes, found by a depth-first search (one list per back edge)."""
    cycles, state = [], dict.fromkeys(edges, 0)
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt, 0) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif state.get(nxt, 0) == 0:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)
    return cycles


def test_the_layers_import_each_other_one_way_only() -> None:
    """Between the package's parts (models/, data/, config, train, diagnostics/, analysis/, ...)
    imports form no cycle: config.py and models/ once imported each other, and so did train.py
    and diagnostics/. The public facade `latentspace/__init__.py` and the CLI sit on top."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, tree in modules.items():
        layer = _layer(name)
        targets = {_layer(t) for t in _imports(tree, set(modules))} - {layer}
        edges.setdefault(layer, set()).update(targets)
    assert _cycles(edges) == []
    assert edges["settings"] <= {"errors"}, "settings.py sits below everything but errors.py"
    assert "config" not in edges["models"], "models read settings.py, never config.py"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# ---- declared capabilities ---------------------------------------------------------------------
def _family_without_monitor() -> str:
    names = [name for name, cls in MODELS.items() if cls.monitor is None]
    if not names:
        pytest.skip("every registered family monitors a validation term")
    return names[0]


def test_patience_on_a_family_without_a_monitored_term_is_a_one_line_error(
    tmp_path: Path, tiny_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _family_without_monitor()
    config = ls.apply_overrides(tiny_config, [f"model.name={name}", "train.patience=2"])
    with pytest.raises(ConfigError, match="no validation loss to stop early on"):
        ls.train(config, tmp_path / "direct", quiet=True, report=False)
    args = ["train", "--dataset", tiny_config.data.dataset, "--model", name]
    assert main([*args, "--out", str(tmp_path / "cli"), "--set", "train.patience=2"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "train.patience = 2" in error


def test_early_stopping_watches_the_term_the_family_declares(
    tmp_path: Path, tiny_config: Config
) -> None:
    """A family with a monitored term stops on it: with min_delta huge nothing counts as an
    improvement after the first epoch, so patience 1 stops after epoch 2."""
    for name, cls in MODELS.items():
        if cls.monitor is None or cls.inputs != "images":  # text: tests/test_text.py
            continue
        config = ls.apply_overrides(
            tiny_config,
            [f"model.name={name}", "train.epochs=5", "train.patience=1", "train.min_delta=1e9"],
        )
        run = ls.train(config, tmp_path / name, quiet=True, diagnostics=False, report=False)
        epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
        assert len(epochs) == 2, name
        assert cls.monitor in epochs[0]["val"]


# ---- one source for each fact ------------------------------------------------------------------
def _train_flags() -> dict[str, object]:
    import argparse

    from latentspace.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    return {option: action for action in train._actions for option in action.option_strings}


def test_the_cli_flags_come_from_one_table_and_the_settings_choices() -> None:
    from latentspace.commands.train import FLAGS
    from latentspace.models.base import _OPTIMIZERS
    from latentspace.settings import CHOICES, OPTIMIZERS, PRECISIONS
    from latentspace.tune.space import DEFAULT_SPACE

    flags = _train_flags()
    assert tuple(_OPTIMIZERS) == OPTIMIZERS
    assert set(DEFAULT_SPACE["train.optimizer"]["choices"]) == set(OPTIMIZERS)
    assert tuple(flags["--optimizer"].choices) == OPTIMIZERS  # type: ignore[attr-defined]
    assert tuple(flags["--precision"].choices) == PRECISIONS  # type: ignore[attr-defined]
    assert tuple(flags["--model"].choices) == tuple(MODELS)  # type: ignore[attr-defined]
    for flag, (key, _) in FLAGS.items():
        action = flags[f"--{flag.replace('_', '-')}"]
        assert key in action.help, flag  # type: ignore[attr-defined]
        if key in CHOICES:
            assert tuple(action.choices) == CHOICES[key]  # type: ignore[attr-defined]
    config = ls.default_config()
    for key, _ in FLAGS.values():  # every flag names a real setting
        section, field = key.split(".")
        assert hasattr(getattr(config, section), field), key


def test_a_flag_and_its_set_override_give_the_same_config(tmp_path: Path) -> None:
    import argparse

    from latentspace.commands.train import config_from_args

    flags = _train_flags()
    base = {action.dest: None for action in flags.values()}  # type: ignore[attr-defined]
    args = argparse.Namespace(**{**base, "config": None, "overrides": [], "strict": False})
    by_flag = config_from_args(argparse.Namespace(**{**vars(args), "lr": "0.003", "hidden": "8,4"}))
    by_set = config_from_args(
        argparse.Namespace(
            **{**vars(args), "overrides": ["train.lr=3e-3", "model.hidden_sizes=8,4"]}
        )
    )
    assert by_flag == by_set and by_flag.train.lr == 0.003 and by_flag.model.hidden_sizes == (8, 4)
