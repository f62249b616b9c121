"""The public API's tiers and the module layout, checked against the code.

The rule (package docstring, docs/architecture.md): the top level is the user's API and every
top-level name is in some module's ``__all__``; a module's ``__all__`` is its full public API
(every name it defines without a leading underscore); ``_``-prefixed names are private to
their subpackage. Every ``Literal`` choice alias has its ``get_args`` tuple beside it. The
module tables of the docs list the thyroidseg modules each module really imports, and the
subpackages import each other in one direction only.

Modules are named by their dotted path below ``thyroidseg`` (``preprocessing.geometry``,
``models.unet``; a subpackage by its name, ``preprocessing``; the top level's
``__init__.py`` as ``__init__``).
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
from thyroidseg.cli import main as cli_entry
from thyroidseg.cli import train as cli_train
from thyroidseg.cli.main import _REMOVED_OPTIONS
from thyroidseg.preprocessing import preprocess
from thyroidseg.preprocessing.geometry import RESIZE_MODES
from thyroidseg.preprocessing.intensity import EQUALIZE_METHODS, SMOOTH_METHODS
from thyroidseg.runtime import AMP_MODES
from thyroidseg.training.demo import run_demo
from thyroidseg.training.losses import LOSS_NAMES
from thyroidseg.training.workflows import REFINE_RECIPE, SCHEDULE_NAMES, train_folder

PACKAGE = Path(thyroidseg.__file__).parent
DOCS = Path(__file__).resolve().parents[1] / "docs"
README = DOCS.parent / "README.md"

MODULE_FILES = sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    """``preprocessing/geometry.py`` -> ``preprocessing.geometry``; a package by its name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_dotted(path): path for path in MODULE_FILES}
"""Every module of the package by dotted name (below ``thyroidseg``) -> its file."""
PUBLIC_MODULES = [
    name for name in MODULES if not any(part.startswith("_") for part in name.split("."))
]
SUBPACKAGES = sorted({name.split(".")[0] for name in MODULES if "." in name})
TABLE_HEADER = re.compile(r"^\|\s*module\s*\|\s*owns\s*\|\s*imports \(thyroidseg\)\s*\|$", re.I)


def _module(name: str):
    return importlib.import_module("thyroidseg" if name == "__init__" else f"thyroidseg.{name}")


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"))


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
    private = [
        name
        for name in MODULES
        if any(part.startswith("_") and not part.endswith("__") for part in name.split("."))
    ]
    assert private, "no private module found"
    assert [name for name in private if "__all__" in vars(_module(name))] == []


MAIN_MODULES = {
    "preprocessing": ["preprocessing.pipeline"],
    "data": ["data.dataset"],
    "models": ["models.unet"],
    "metrics": ["metrics.confusion"],
    "inference": ["inference.segmenter", "inference.folders", "inference.onnx"],
    "training": ["training.trainer"],
    "io": ["io.files", "io.folder_loop"],
    "cli": ["cli.main"],
}
"""Each subpackage re-exports the ``__all__`` of these modules (for ``data``, ``metrics``,
``inference``, ``training`` and ``preprocessing``: the 0.1 module of that name)."""


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_a_subpackage_re_exports_its_main_modules_all(package):
    exported = [name for main in MAIN_MODULES[package] for name in _module(main).__all__]
    assert sorted(_module(package).__all__) == sorted(exported)
    for main in MAIN_MODULES[package]:
        for name in _module(main).__all__:
            assert getattr(_module(package), name) is getattr(_module(main), name)


def test_subpackage_inits_are_thin():
    """An ``__init__`` only imports from its own modules (at the top, or on first use as
    its ``_LAZY`` table says): no cycles through package inits."""
    for package in SUBPACKAGES:
        imported = _thyroidseg_imports(_tree(package))
        lazy = {f"{package}.{module}" for module in getattr(_module(package), "_LAZY", {}).values()}
        assert imported | lazy == set(MAIN_MODULES[package]), package


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
        ("models.unet", "Norm"): "NORMS",
        ("models.unet", "Downsample"): "DOWNSAMPLES",
        ("models.unet", "Upsample"): "UPSAMPLES",
        ("models.unet", "Padding"): "PADDINGS",
        ("preprocessing.intensity", "EqualizeMethod"): "EQUALIZE_METHODS",
        ("preprocessing.intensity", "SmoothMethod"): "SMOOTH_METHODS",
        ("preprocessing.geometry", "ResizeMode"): "RESIZE_MODES",
        ("data.layouts", "Layout"): "LAYOUTS",
        ("runtime", "AmpMode"): "AMP_MODES",
        ("training.workflows", "OptimizerName"): "OPTIMIZER_NAMES",
        ("training.workflows", "ScheduleName"): "SCHEDULE_NAMES",
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


def test_the_cli_copies_of_training_defaults_are_the_librarys():
    """The training side's parsers show copies (they import no training code): no drift."""
    defaults = {name: _default(train_folder, name) for name in cli_train.TRAIN_DEFAULTS}
    assert cli_train.TRAIN_DEFAULTS == defaults
    whole = {name: _default(train_folder, name) for name in REFINE_RECIPE}
    assert (cli_train.WHOLE_RECIPE, cli_train.REFINE_RECIPE) == (whole, REFINE_RECIPE)
    assert (cli_train.LOSS_CHOICES, cli_train.SCHEDULE_CHOICES) == (LOSS_NAMES, SCHEDULE_NAMES)
    assert cli_train.TRAIN_SIZE == _default(train_folder, "size")
    assert cli_train.DEMO_SIZE == _default(run_demo, "size")
    assert _cli_option("train", "--lr").default == _default(train_folder, "lr")


@pytest.mark.parametrize(
    ("command", "function"),
    [("preprocess", preprocess), ("train", train_folder), ("demo", run_demo)],
)
def test_cli_size_defaults_to_the_library_call_it_feeds(command, function):
    assert tuple(_cli_option(command, "--size").default) == _default(function, "size")


def _commands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_the_cli_page_gives_every_option_in_its_commands_synopsis(command):
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    synopsis = re.search(rf"^## {command}\n\n```text\n(.*?)```", text, re.DOTALL | re.MULTILINE)
    assert synopsis, f"docs/cli.md has no synopsis under '## {command}'"
    options = [
        max(action.option_strings, key=len)
        for action in _commands()[command]._actions
        if action.option_strings and action.help not in (argparse.SUPPRESS, None)
        and action.dest != "help"
    ]  # fmt: skip
    missing = [o for o in options if not re.search(rf"{re.escape(o)}(?![\w-])", synopsis[1])]
    assert missing == []


@pytest.mark.parametrize("command", ["demo", "train", "predict"])
def test_cli_amp_choices_are_the_amp_modes(command):
    assert tuple(_cli_option(command, "--amp").choices) == AMP_MODES


@pytest.mark.parametrize(
    ("command", "option"),
    [(prog.split()[-1], option) for prog, gone in _REMOVED_OPTIONS.items() for option in gone],
)
def test_an_option_removed_in_0_3_is_no_option_nor_the_abbreviation_of_one(command, option):
    """argparse takes a prefix of an option for that option (``allow_abbrev``): a removed
    spelling must stay unknown to its command, so that the error names its replacement."""
    live = [name for action in _commands()[command]._actions for name in action.option_strings]
    assert [name for name in live if name.startswith(option)] == []


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
    command_line = {name for name in PUBLIC_MODULES if _layer(name) == "front"} - {"cli.info"}
    undocumented = sorted(set(PUBLIC_MODULES) - command_line - documented)
    assert undocumented == [], f"no ::: block in docs/ for {undocumented}"


def test_docs_do_not_teach_private_modules():
    taught = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for number, line in enumerate(page.read_text("utf-8").splitlines(), start=1):
            if re.search(r"\bthyroidseg\._[a-z]", line):
                taught.append(f"{page.name}:{number}: {line.strip()}")
    assert not taught, "\n".join(taught)


# -- the layout ----------------------------------------------------------------------


def test_architecture_tables_list_every_module_once():
    listed = [
        module
        for page, rows in _module_tables()
        if page == DOCS / "architecture.md"
        for module in rows
    ]
    assert sorted(listed) == sorted(MODULES)


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


@pytest.mark.parametrize("path", MODULE_FILES, ids=_dotted)
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
    assert inner == [], f"{_dotted(path)}: thyroidseg imported inside a function at {inner}"


def _loaded_by(code: str) -> list[str]:
    """The thyroidseg modules a fresh interpreter has loaded after running ``code``."""
    code += "\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith('thyroidseg')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_predicting_imports_no_training_code():
    loaded = _loaded_by(
        "import numpy as np\n"
        "from thyroidseg import Segmenter, measure\n"
        "frame = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)\n"
        "mask = Segmenter.pretrained(device='cpu').predict(frame)\n"
        "measure(mask)\n"
    )
    assert "thyroidseg.inference.segmenter" in loaded
    training_side = [m for m in loaded if m.startswith("thyroidseg.training")]
    assert training_side + [m for m in loaded if m == "thyroidseg.data.augment"] == []


# -- one direction between the subpackages --------------------------------------------

MAY_IMPORT = {
    "preprocessing": set(),
    "data": {"preprocessing"},
    "models": {"preprocessing"},
    "metrics": {"preprocessing"},
    "inference": {"preprocessing", "models"},
    "training": {"preprocessing", "data", "models", "metrics", "inference"},
}
"""The subpackages each subpackage may import (docs/architecture.md draws it)."""
FRONT = {"__init__", "__main__", "cli"}
"""Above the subpackages (the top level and the whole ``cli`` subpackage): they may import
anything."""
BASE = {"io"}
"""Below the subpackages, with every top-level module not in `FRONT` (``runtime``,
``_checks``...): the whole ``io`` subpackage, which every subpackage may import."""


def _layer(module: str) -> str:
    first = module.split(".")[0]
    if first in FRONT or module in FRONT:
        return "front"
    return first if first in SUBPACKAGES and first not in BASE else "base"


def test_at_most_four_top_level_modules_beside_the_package_files():
    top = [name for name in MODULES if "." not in name and name not in SUBPACKAGES]
    assert len(set(top) - {"__init__", "__main__", "_version"}) <= 4, top


def test_the_allowed_imports_between_subpackages_have_no_cycle():
    assert sorted(MAY_IMPORT) == sorted(set(SUBPACKAGES) - FRONT - BASE)
    order: list[str] = []
    while len(order) < len(MAY_IMPORT):  # peel off the packages whose imports are placed
        ready = [p for p in MAY_IMPORT if p not in order and MAY_IMPORT[p] <= set(order)]
        assert ready, f"a cycle among {sorted(set(MAY_IMPORT) - set(order))}"
        order += sorted(ready)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_one_way(name):
    layer = _layer(name)
    wrong = []
    for imported in _thyroidseg_imports(_tree(name)):
        other = _layer(imported)
        if layer == "front" or other in ("base", layer):
            ok = layer != "base" or other == "base"
        else:
            ok = other in MAY_IMPORT.get(layer, set())
        if layer == "inference" and imported == "data.augment":
            ok = False
        if not ok:
            wrong.append(imported)
    assert wrong == [], f"thyroidseg.{name} ({layer}) must not import {wrong}"


def test_the_command_line_loads_training_code_only_to_run_train_or_demo():
    loaded = _loaded_by("import thyroidseg.cli\nthyroidseg.cli.build_parser()")
    assert "thyroidseg.cli.main" in loaded
    assert [m for m in loaded if m.startswith("thyroidseg.training")] == []


def _import_graph() -> dict[str, set[str]]:
    """Module -> the thyroidseg modules it imports at its top level when it runs.

    ``from thyroidseg import x`` is an edge to module ``x`` when it is one, else to the
    package's ``__init__``; imports under ``if TYPE_CHECKING:`` or inside functions are not
    edges (they do not run on import).
    """
    return {
        name: {
            imported if imported in MODULES else "__init__"
            for imported in _thyroidseg_imports(_tree(name))
        }  # fmt: skip
        for name in MODULES
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` that hold a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}, "b": set()}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    """No import cycle among thyroidseg's modules (top-level imports, read from the source)."""
    graph = _import_graph()
    assert sum(map(len, graph.values())) > len(MODULES)  # the edges were found
    assert _cycles(graph) == []


def test_inference_never_reaches_training():
    loaded = _loaded_by("import thyroidseg.inference")
    assert [m for m in loaded if m.startswith("thyroidseg.training")] == []
    assert "thyroidseg.data.augment" not in loaded


@pytest.mark.parametrize("name", sorted(MODULES))
def test_private_names_stay_in_their_subpackage(name):
    """``from thyroidseg.<package>.<module> import _name`` only inside ``<package>``."""
    layer = _layer(name)
    borrowed = []
    for node in _tree(name).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("thyroidseg."):
            home = _layer(node.module.removeprefix("thyroidseg."))
            if home in SUBPACKAGES and home != layer:
                borrowed += [a.name for a in node.names if a.name.startswith("_")]
    assert borrowed == [], f"thyroidseg.{name} borrows private names {borrowed}"


def test_the_training_side_loads_on_first_use():
    assert thyroidseg.Trainer is importlib.import_module("thyroidseg.training").Trainer
    with pytest.raises(AttributeError, match="no attribute 'nothing'$"):
        thyroidseg.nothing  # noqa: B018


@pytest.mark.parametrize(("name", "home"), sorted(thyroidseg._REMOVED.items()))
def test_a_removed_top_level_name_names_its_module(name, home):
    """Gone from the top level in 0.3; the error names a module that exports it from home."""
    hint = rf"no attribute '{name}'; since 0.3 import it from thyroidseg\.{home}$"
    with pytest.raises(AttributeError, match=hint):
        getattr(thyroidseg, name)
    module = importlib.import_module(f"thyroidseg.{home}")
    assert name in module.__all__ and name not in thyroidseg.__all__
    defined_in = getattr(module, name).__module__  # home or a module below it
    assert f"{defined_in}.".startswith(f"{module.__name__}.")


def test_from_import_of_a_removed_top_level_name_fails():
    with pytest.raises(ImportError, match="cannot import name 'measure_many' from 'thyroidseg'"):
        from thyroidseg import measure_many  # noqa: F401


OLD_MODULES = (
    "__init__ __main__ _checks _cli_options _io _progress _version augment batching boundary "
    "checkpoint cli counting data diagnostics dicom distributed divergence ensemble evaluation "
    "export geometry history inference inpainting intensity layouts losses measurements "
    "metrics model model_loading overlay postprocess preprocessing refine registry runtime "
    "scan_region spacing splits statistics synthetic trainer_checks training workflows"
).split()
"""The flat modules of 0.1 (and ``dicom``, ``spacing``, ``diagnostics`` of early 0.2)."""

REMOVED_PATHS = [name for name in OLD_MODULES if name not in MODULES]
"""The old paths that are no module any more (deprecated in 0.2, removed in 0.3)."""


@pytest.mark.parametrize("name", REMOVED_PATHS)
def test_a_removed_module_path_does_not_import(name):
    with pytest.raises(ModuleNotFoundError, match=rf"^No module named 'thyroidseg\.{name}'$"):
        importlib.import_module(f"thyroidseg.{name}")
    assert f"thyroidseg.{name}" not in sys.modules
    with pytest.raises(AttributeError, match=f"no attribute '{name}'$"):
        getattr(thyroidseg, name)


def _removed_paths_table() -> dict[str, str]:
    """docs/architecture.md's table of the removed module paths: old -> new, below thyroidseg."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.partition("### Module paths removed in 0.3")[2].partition("\n#")[0]
    table = {}
    for olds, new in re.findall(r"^\| (`.*?) \| `([\w.<>]+)`", section, re.MULTILINE):
        table |= {old: new.replace("<same>", old) for old in re.findall(r"`(\w+)`", olds)}
    return table


def test_the_docs_say_where_each_removed_public_module_path_went():
    table = _removed_paths_table()
    assert sorted(table) == sorted(name for name in REMOVED_PATHS if not name.startswith("_"))
    assert [new for new in table.values() if new not in MODULES] == []


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_the_version_follows_the_changelog(capsys):
    """Unreleased entries: a version above the last release; none: that release's version."""
    text = (README.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d\d-\d\d$", text, re.MULTILINE)
    unreleased = text.partition("## [Unreleased]")[2].partition("\n## [")[0]
    with pytest.raises(SystemExit):
        cli_entry(["--version"])
    reported = capsys.readouterr().out.split()[-1]
    assert reported == thyroidseg.__version__
    if re.search(r"^- ", unreleased, re.MULTILINE):
        assert _release(reported) > _release(released[0])
    else:
        assert reported == released[0]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_formulas_use_the_docs_math(name):
    """``$...$`` / ``$$...$$`` (arithmatex renders them); reST's math is printed raw."""
    source = MODULES[name].read_text(encoding="utf-8")
    assert ".. math::" not in source and ":math:`" not in source
