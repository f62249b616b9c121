"""The public API's tiers and the module layout, checked against the code.

The rule (package docstring, docs/architecture.md): the top level is the user's API and every
top-level name is in some module's ``__all__``; a module's ``__all__`` is its full public API
(every name it defines without a leading underscore); ``_``-prefixed names are private.
Every ``Literal`` choice alias has its ``get_args`` tuple beside it. The module tables of
the docs list the thyroidseg modules each module really imports.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

import thyroidseg
from thyroidseg.cli import build_parser
from thyroidseg.geometry import RESIZE_MODES
from thyroidseg.intensity import EQUALIZE_METHODS, SMOOTH_METHODS
from thyroidseg.losses import LOSS_NAMES
from thyroidseg.preprocessing import preprocess
from thyroidseg.runtime import AMP_MODES
from thyroidseg.workflows import SCHEDULE_NAMES, run_demo, train_folder

PACKAGE = Path(thyroidseg.__file__).parent
DOCS = Path(__file__).resolve().parents[1] / "docs"
README = DOCS.parent / "README.md"

MODULE_FILES = sorted(PACKAGE.glob("*.py"))
PUBLIC_MODULES = [path.stem for path in MODULE_FILES if not path.stem.startswith("_")]
TABLE_HEADER = re.compile(r"^\|\s*module\s*\|\s*owns\s*\|\s*imports \(thyroidseg\)\s*\|$", re.I)


def _module(name: str):
    return importlib.import_module(f"thyroidseg.{name}")


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))


def _thyroidseg_imports(tree: ast.Module) -> set[str]:
    """Modules of thyroidseg imported at the top of a module (``from thyroidseg.x import``)."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("thyroidseg."):
                found.add(node.module.removeprefix("thyroidseg."))
            elif node.module == "thyroidseg":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("thyroidseg.")
                for alias in node.names
                if alias.name.startswith("thyroidseg.")
            )
    return found


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names - {"__all__"}


def _module_tables() -> list[tuple[Path, dict[str, set[str]]]]:
    """Every ``| module | owns | imports (thyroidseg) |`` table in docs/*.md, parsed."""
    tables = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for start, line in enumerate(lines):
            if not TABLE_HEADER.match(line.strip()):
                continue
            rows: dict[str, set[str]] = {}
            for row in lines[start + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
                module = cells[0].strip("`").removeprefix("thyroidseg.")
                imports = re.findall(r"`([^`]+)`", cells[-1])
                rows[module] = {name.removeprefix("thyroidseg.") for name in imports}
            tables.append((page, rows))
    return tables


# -- the three tiers ----------------------------------------------------------------


def test_top_level_all_is_sorted_and_unique():
    assert thyroidseg.__all__ == sorted(set(thyroidseg.__all__))


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_module_all_names_exist_are_public_and_unique(name):
    module = _module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"thyroidseg.{name} has no __all__"
    assert len(exported) == len(set(exported)), f"thyroidseg.{name}.__all__ repeats a name"
    assert [n for n in exported if n.startswith("_")] == []
    assert [n for n in exported if not hasattr(module, n)] == []


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_module_all_is_the_full_public_api(name):
    defined = {n for n in _defined_names(_tree(name)) if not n.startswith("_")}
    missing = sorted(defined - set(_module(name).__all__))
    assert missing == [], f"thyroidseg.{name} defines public names outside __all__: {missing}"


def test_every_top_level_name_comes_from_a_module_all():
    homes = {}
    for name in PUBLIC_MODULES:
        module = _module(name)
        for exported in module.__all__:
            homes.setdefault(exported, []).append(getattr(module, exported))
    for name in thyroidseg.__all__:
        if name == "__version__":
            continue
        assert name in homes, f"thyroidseg.{name} is in no module's __all__"
        assert any(obj is getattr(thyroidseg, name) for obj in homes[name])


def test_private_modules_have_no_all():
    private = [p.stem for p in MODULE_FILES if p.stem.startswith("_") and not p.stem.endswith("__")]
    assert [name for name in private if "__all__" in vars(_module(name))] == []


# -- one source for every list of choices -------------------------------------------


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_literal_alias_has_its_tuple(name):
    module = _module(name)
    values = [getattr(module, n) for n in module.__all__]
    tuples = [value for value in values if isinstance(value, tuple)]
    for exported, value in zip(module.__all__, values, strict=True):
        if typing.get_origin(value) is typing.Literal:
            assert typing.get_args(value) in tuples, f"thyroidseg.{name}.{exported}"


def test_choice_tuples_are_the_literals():
    from_module = {
        ("model", "Norm"): "NORMS",
        ("model", "Downsample"): "DOWNSAMPLES",
        ("model", "Upsample"): "UPSAMPLES",
        ("model", "Padding"): "PADDINGS",
        ("intensity", "EqualizeMethod"): "EQUALIZE_METHODS",
        ("intensity", "SmoothMethod"): "SMOOTH_METHODS",
        ("geometry", "ResizeMode"): "RESIZE_MODES",
        ("layouts", "Layout"): "LAYOUTS",
        ("runtime", "AmpMode"): "AMP_MODES",
        ("workflows", "OptimizerName"): "OPTIMIZER_NAMES",
        ("workflows", "ScheduleName"): "SCHEDULE_NAMES",
    }
    for (name, alias), constant in from_module.items():
        module = _module(name)
        assert getattr(module, constant) == typing.get_args(getattr(module, alias))


def _cli_option(command: str, flag: str) -> argparse.Action:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in commands.choices[command]._actions if flag in a.option_strings)


def _default(function: Callable[..., object], parameter: str) -> object:
    return inspect.signature(function).parameters[parameter].default


@pytest.mark.parametrize(
    ("command", "flag", "choices", "function", "parameter"),
    [
        ("preprocess", "--equalization", (*EQUALIZE_METHODS, "none"), preprocess, "equalization"),
        ("preprocess", "--smoothing", (*SMOOTH_METHODS, "none"), preprocess, "smoothing"),
        ("preprocess", "--resize-mode", RESIZE_MODES, preprocess, "resize_mode"),
        ("train", "--loss", LOSS_NAMES, train_folder, "loss"),
        ("train", "--schedule", SCHEDULE_NAMES, train_folder, "schedule"),
    ],
)
def test_cli_choices_and_defaults_are_the_librarys(command, flag, choices, function, parameter):
    option = _cli_option(command, flag)
    assert tuple(option.choices) == choices
    assert option.default == _default(function, parameter)


@pytest.mark.parametrize(
    ("command", "function"),
    [("preprocess", preprocess), ("train", train_folder), ("demo", run_demo)],
)
def test_cli_size_defaults_to_the_library_call_it_feeds(command, function):
    assert tuple(_cli_option(command, "--size").default) == _default(function, "size")


@pytest.mark.parametrize("command", ["demo", "train", "predict"])
def test_cli_amp_choices_are_the_amp_modes(command):
    assert tuple(_cli_option(command, "--amp").choices) == AMP_MODES


# -- docs ----------------------------------------------------------------------------


def _documented_modules() -> list[str]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        found += re.findall(r"^::: (thyroidseg[\w.]*)\s*$", page.read_text("utf-8"), re.M)
    return found


def test_documented_names_import():
    documented = _documented_modules()
    assert documented, "no ::: blocks found in docs/"
    for dotted in documented:
        try:
            importlib.import_module(dotted)
        except ModuleNotFoundError:
            parent, _, attribute = dotted.rpartition(".")
            assert hasattr(importlib.import_module(parent), attribute), dotted


def test_every_public_module_has_an_api_page():
    documented = {dotted.removeprefix("thyroidseg.") for dotted in _documented_modules()}
    undocumented = sorted(set(PUBLIC_MODULES) - {"cli"} - documented)
    assert undocumented == [], f"no ::: block in docs/ for {undocumented}"


def test_docs_do_not_teach_private_modules():
    taught = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for number, line in enumerate(page.read_text("utf-8").splitlines(), start=1):
            if re.search(r"\bthyroidseg\._[a-z]", line):
                taught.append(f"{page.name}:{number}: {line.strip()}")
    assert not taught, "\n".join(taught)


# -- the layout ----------------------------------------------------------------------


def test_architecture_table_lists_every_module():
    tables = dict(_module_tables())
    listed = tables[DOCS / "architecture.md"]
    assert sorted(listed) == sorted(path.stem for path in MODULE_FILES)


def test_module_tables_match_the_imports():
    tables = _module_tables()
    assert tables, "no module tables found in docs/"
    wrong = []
    for page, rows in tables:
        for module, imports in rows.items():
            actual = _thyroidseg_imports(_tree(module))
            if imports != actual:
                table, code = sorted(imports), sorted(actual)
                wrong.append(f"{page.name} {module}: table {table}, code {code}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda path: path.name)
def test_no_thyroidseg_import_inside_a_function(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for statement in ast.walk(node):
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith(
                    "thyroidseg"
                ):
                    inner.append(statement.lineno)
                elif isinstance(statement, ast.Import) and any(
                    alias.name.startswith("thyroidseg") for alias in statement.names
                ):
                    inner.append(statement.lineno)
    assert inner == [], f"{path.name}: thyroidseg imported inside a function at lines {inner}"


def test_predicting_imports_no_training_code():
    code = (
        "import sys, numpy as np\n"
        "from thyroidseg import Segmenter, measure\n"
        "frame = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)\n"
        "mask = Segmenter.pretrained(device='cpu').predict(frame)\n"
        "measure(mask)\n"
        "print(sorted(m for m in sys.modules if m.startswith('thyroidseg.')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    training_side = ("training", "trainer_checks", "workflows", "losses", "batching",
                     "distributed", "divergence", "augment", "history")  # fmt: skip
    assert [name for name in training_side if f"'thyroidseg.{name}'" in loaded] == []


def test_the_training_side_loads_on_first_use_and_old_names_warn():
    assert thyroidseg.Trainer is importlib.import_module("thyroidseg.training").Trainer
    with pytest.warns(FutureWarning, match="import it from thyroidseg.measurements"):
        moved = thyroidseg.measure_many
    assert moved is importlib.import_module("thyroidseg.measurements").measure_many
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        thyroidseg.nothing  # noqa: B018
