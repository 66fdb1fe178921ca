"""The parts of the code depend in one direction, and no module imports another's private helpers.

pages -> ui -> quant_core; inside quant_core, lower parts never import higher ones:

    errors  <  numerics.formats, numerics.cpu_target, methods.catalog  <  config  <  numerics  <  model
            <  engine  <  search, export, learn, methods  <  cli

(config is the user's vocabulary: it names formats, CPU targets and accuracy-recovery methods, and every
numeric routine takes its TensorQuant.) Imports inside functions count as much as those at the top of a file.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"errors": 0, "config": 2, "numerics": 3, "model": 4, "engine": 5, "search": 6, "export": 6,
          "learn": 6, "methods": 6, "cli": 7}
VOCABULARY = {"quant_core.numerics.formats": 1, "quant_core.numerics.cpu_target": 1, "quant_core.methods.catalog": 1,
              "quant_core.methods": 1}  # the methods package's own __init__ only names its modules (loaded on use)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module_name(path): path for path in sorted((ROOT / "quant_core").rglob("*.py"))}


def _level(module: str) -> int | None:
    if module in VOCABULARY:
        return VOCABULARY[module]
    parts = module.split(".")
    return LEVELS.get(parts[1]) if len(parts) > 1 else None


def _imports(path: Path):
    """Yield (line, imported module, imported names) for every import of quant_core in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("quant_core"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, (sub if sub in MODULES else node.module), alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("quant_core"):
                    yield node.lineno, alias.name, None


def test_every_quant_core_module_belongs_to_a_part():
    assert [module for module in MODULES if module not in ("quant_core", "quant_core.__main__")
            and _level(module) is None] == []


def test_no_quant_core_module_imports_a_higher_part():
    upward = []
    for module, path in MODULES.items():
        mine = _level(module)
        if mine is None:
            continue
        for line, imported, _ in _imports(path):
            theirs = _level(imported)
            if theirs is not None and theirs > mine:
                upward.append(f"{module}:{line} imports {imported}")
    assert upward == []


def test_no_module_imports_a_private_name_of_another_module():
    private = []
    for path in [*MODULES.values(), *sorted((ROOT / "ui").rglob("*.py")), *sorted((ROOT / "pages").glob("*.py"))]:
        for line, imported, name in _imports(path):
            if name and name.startswith("_") and imported != _module_name(path):
                private.append(f"{path.relative_to(ROOT)}:{line} imports {imported}.{name}")
    assert private == []


@pytest.mark.parametrize("folder", ["ui", "pages"])
def test_the_ui_reaches_the_core_only_downwards(folder):
    # ui may use quant_core; quant_core never uses ui or pages (checked below); pages use ui and quant_core.
    for path in (ROOT / folder).rglob("*.py"):
        for _, imported, _ in _imports(path):
            assert imported in MODULES or imported.rsplit(".", 1)[0] in MODULES, f"{path}: {imported} is not a module"


def test_quant_core_never_imports_the_ui():
    offenders = [f"{module}: {line}" for module, path in MODULES.items()
                 for line, text in enumerate(path.read_text().splitlines(), 1)
                 if text.strip().startswith(("import ui", "from ui", "import pages", "from pages", "import streamlit",
                                             "from streamlit"))]
    assert offenders == []


def test_importing_quant_core_does_not_import_streamlit():
    code = "import sys, quant_core, quant_core.cli.main; assert 'streamlit' not in sys.modules, 'streamlit was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _import_graph(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the modules of `folders` it imports (at the top or inside functions, typing-only too)."""
    modules = {_module_name(path): path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))}
    graph = {}
    for module, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                             for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[module] = {name for name in found if name in modules and name != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected, more than one)."""
    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for name in graph[todo.pop()] - seen:
                seen.add(name)
                todo.append(name)
        return seen

    reach = {module: reaches(module) for module in graph}
    groups = {frozenset({m} | {o for o in reach[m] if m in reach[o]}) for m in graph if m in reach[m]}
    return sorted(sorted(group) for group in groups)


def test_no_modules_of_the_core_or_the_ui_import_each_other_in_a_circle():
    assert _cycles(_import_graph(("quant_core", "ui"))) == []


def test_the_circle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

