"""The import structure of the installed `rairl` package, read from its source with `ast`.

Every import statement counts, lazy ones inside functions included (and `importlib.import_module`
/ `__import__` calls with a literal name). `rairl.kernels` lives in the top-level `kernels/`
folder, so modules are found through `rairl.__path__` and `rairl.kernels.__path__`.
"""

from __future__ import annotations

import ast
import importlib.machinery
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import rairl.kernels

import rairl

EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


@dataclass
class Package:
    """The modules of one package: dotted name -> source file (None for compiled extensions)."""

    name: str
    files: dict[str, Path | None] = field(default_factory=dict)

    def add_tree(self, prefix: str, folder: Path) -> None:
        """Every module under `folder`, named `prefix.<relative path>` (`prefix` itself for `__init__.py`)."""
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if "__pycache__" in rel.parts or not path.is_file():
                continue
            if path.suffix == ".py":
                stem, source = path.stem, path
            elif path.name.endswith(EXTENSION_SUFFIXES):
                stem, source = path.name.split(".", 1)[0], None
            else:
                continue
            parts = [*prefix.split("."), *rel.parent.parts]
            if stem != "__init__":
                parts.append(stem)
            # a nested folder only counts as a subpackage when every folder on the way has an __init__.py
            if all((folder.joinpath(*rel.parent.parts[:i]) / "__init__.py").exists() for i in range(len(rel.parent.parts) + 1)):
                self.files.setdefault(".".join(parts), source)

    def is_package(self, module: str) -> bool:
        source = self.files[module]
        return source is not None and source.name == "__init__.py"


def installed_rairl() -> Package:
    pkg = Package("rairl")
    for folder in rairl.__path__:
        pkg.add_tree("rairl", Path(folder))
    for folder in rairl.kernels.__path__:  # the top-level kernels/ folder, shipped as rairl.kernels
        pkg.add_tree("rairl.kernels", Path(folder))
    return pkg


def _imported_names(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The dotted names an import node (or literal import_module / __import__ call) asks for."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [prefix] + [f"{prefix}.{a.name}" for a in node.names if a.name != "*"]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__"):
            return [node.args[0].value]
    return []


def imports_of(pkg: Package, module: str) -> set[str]:
    """Every dotted name `module` imports (outside modules too, e.g. `argparse`), as written."""
    source = pkg.files[module]
    if source is None:
        return set()
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        names.update(n for n in _imported_names(module, pkg.is_package(module), node) if n)
    return names


def _resolve(pkg: Package, name: str) -> str | None:
    """The package module `name` lands in: itself, or its longest prefix that is a module of `pkg`."""
    while name and name not in pkg.files:
        name = name.rpartition(".")[0]
    return name or None


def internal_imports(pkg: Package, module: str) -> set[str]:
    """The modules of `pkg` that `module` imports directly (resolved; itself left out)."""
    out = set()
    for name in imports_of(pkg, module):
        if name == pkg.name or name.startswith(pkg.name + "."):
            dep = _resolve(pkg, name)
            if dep and dep != module:
                out.add(dep)
    return out


def import_graph(pkg: Package) -> dict[str, set[str]]:
    """module -> the modules of `pkg` importing it runs: each import's target and the packages above it.

    Importing `a.b.c` runs `a/__init__`, `a.b/__init__` and `a.b.c`; the packages above the importing
    module itself are already being imported when it runs, so they are left out.
    """
    graph: dict[str, set[str]] = {m: set() for m in pkg.files}
    for m in pkg.files:
        for dep in internal_imports(pkg, m):
            parts = dep.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in pkg.files and target != m and not m.startswith(target + "."):
                    graph[m].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        cycles.append(sorted(comp))
    return cycles


def _cycle_path(graph: dict[str, set[str]], group: list[str]) -> str:
    """One concrete cycle inside a strongly connected group, for the failure message."""
    members, start = set(group), group[0]
    parent, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return " -> ".join([*reversed(path), start])
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return " <-> ".join(group)


@pytest.fixture(scope="module")
def pkg() -> Package:
    return installed_rairl()


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


# the checker itself -----------------------------------------------------------------------------
def test_the_package_is_found_whole(pkg):
    """The checks below read every module: kernels (outside rairl/) and lazy importers included."""
    for name in ("rairl", "rairl.cli", "rairl.kernels", "rairl.kernels.segments", "rairl.kernels.airl_loss",
                 "rairl.airl.layout", "rairl.commands.compare", "rairl.train.warm_start", "rairl._segments"):
        assert name in pkg.files, name
    assert len([m for m in pkg.files if m.startswith("rairl.kernels.")]) >= 3
    # a lazy import inside a function counts: the YAML loader of rairl.configs
    assert "yaml" in imports_of(pkg, "rairl.configs")
    # relative imports resolve to the package's modules, the extension module included
    assert "rairl.airl.layout" in internal_imports(pkg, "rairl.airl.discriminator")
    assert "rairl._segments" in internal_imports(pkg, "rairl.kernels.segments")


def test_the_cycle_checker_finds_a_cycle_it_is_shown(tmp_path):
    """A two-module package whose modules import each other (one of them lazily, in a function)."""
    _write(tmp_path / "cyc", {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .a import g\n    return g\n",
        "c.py": "import cyc.a\n",
    })
    toy = Package("cyc")
    toy.add_tree("cyc", tmp_path / "cyc")
    graph = import_graph(toy)
    assert graph["cyc.a"] == {"cyc.b"} and graph["cyc.b"] == {"cyc.a"} and graph["cyc.c"] == {"cyc.a"}
    assert import_cycles(graph) == [["cyc.a", "cyc.b"]]
    assert _cycle_path(graph, ["cyc.a", "cyc.b"]) == "cyc.a -> cyc.b -> cyc.a"


def test_the_cycle_checker_sees_cycles_through_a_package_init(tmp_path):
    """`from cyc.sub.x import f` runs `cyc/sub/__init__.py` too: a cycle through it is a cycle."""
    _write(tmp_path / "cyc", {
        "__init__.py": "",
        "top.py": "from cyc.sub.x import f\n",
        "sub/__init__.py": "from ..top import g\n",
        "sub/x.py": "from . import y\n",  # a submodule importing its own package: no cycle by itself
        "sub/y.py": "",
    })
    toy = Package("cyc")
    toy.add_tree("cyc", tmp_path / "cyc")
    graph = import_graph(toy)
    assert graph["cyc.sub.x"] == {"cyc.sub.y"}
    assert import_cycles(graph) == [["cyc.sub", "cyc.top"]]
    _write(tmp_path / "cyc", {"sub/__init__.py": ""})
    toy = Package("cyc")
    toy.add_tree("cyc", tmp_path / "cyc")
    assert import_cycles(import_graph(toy)) == []


# rairl ------------------------------------------------------------------------------------------
def test_no_import_cycles(pkg):
    graph = import_graph(pkg)
    assert sum(map(len, graph.values())) > len(pkg.files)  # the graph is not trivially empty
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_cycle_path(graph, c) for c in cycles)


def _named(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def cli_offenders(pkg: Package) -> dict[str, list[str]]:
    """Modules other than rairl.cli importing rairl.cli or argparse."""
    offenders = {}
    for m in pkg.files:
        bad = sorted(n for n in imports_of(pkg, m) if _named(n, ("argparse", "rairl.cli")))
        if bad and m != "rairl.cli":
            offenders[m] = bad
    return offenders


def commands_offenders(pkg: Package) -> dict[str, list[str]]:
    """Modules of rairl.commands importing another rairl.commands module (the package's __init__ included)."""
    offenders = {}
    for m in pkg.files:
        if _named(m, ("rairl.commands",)):
            bad = sorted(n for n in imports_of(pkg, m) if _named(n, ("rairl.commands",)) and _resolve(pkg, n) != m)
            if bad:
                offenders[m] = bad
    return offenders


LOWER = ("rairl.models", "rairl.data", "rairl.rl", "rairl.kernels")
UPPER = ("rairl.train", "rairl.eval", "rairl.commands", "rairl.plan", "rairl.airl")


def layer_offenders(pkg: Package) -> dict[str, list[str]]:
    """Modules of the lower layers importing from an upper one."""
    offenders = {}
    for m in pkg.files:
        if _named(m, LOWER):
            bad = sorted(n for n in imports_of(pkg, m) if _named(n, UPPER))
            if bad:
                offenders[m] = bad
    return offenders


def test_only_the_cli_imports_the_cli_or_argparse(pkg):
    assert "argparse" in imports_of(pkg, "rairl.cli")  # the check looks at the names the cli really imports
    assert cli_offenders(pkg) == {}


def test_commands_never_import_each_other(pkg):
    commands = {m for m in pkg.files if _named(m, ("rairl.commands",))}
    assert {"rairl.commands.compare", "rairl.commands.demo", "rairl.commands.files", "rairl.commands.train"} <= commands
    assert commands_offenders(pkg) == {}


def test_lower_layers_never_import_upper_ones(pkg):
    lower = [m for m in pkg.files if _named(m, LOWER)]
    assert len(lower) >= 15 and sum(m.startswith("rairl.kernels.") for m in lower) >= 3
    assert layer_offenders(pkg) == {}


def test_the_rule_checks_see_violations(tmp_path):
    """The same checks on a toy copy of the layout that breaks every rule, lazily too."""
    _write(tmp_path / "rairl", {
        "__init__.py": "",
        "cli.py": "import argparse\nfrom .commands import demo\n",
        "plan.py": "",
        "models/__init__.py": "",
        "models/lm.py": "def f():\n    from ..train import run\n",
        "data/__init__.py": "import importlib\nrun = importlib.import_module('rairl.eval.policy')\n",
        "eval/__init__.py": "",
        "eval/policy.py": "",
        "train/__init__.py": "",
        "train/run.py": "from rairl.cli import main\n",
        "commands/__init__.py": "",
        "commands/demo.py": "from .files import x\n",
        "commands/files.py": "def f():\n    from argparse import ArgumentParser\n",
        "commands/train.py": "from rairl.commands import files\n",
        "commands/compare.py": "from rairl.train.run import x\n",
    })
    _write(tmp_path / "kernels", {"__init__.py": "", "segments.py": "from rairl import plan\n"})
    toy = Package("rairl")
    toy.add_tree("rairl", tmp_path / "rairl")
    toy.add_tree("rairl.kernels", tmp_path / "kernels")
    assert cli_offenders(toy) == {"rairl.train.run": ["rairl.cli", "rairl.cli.main"],
                                  "rairl.commands.files": ["argparse", "argparse.ArgumentParser"]}
    assert commands_offenders(toy) == {"rairl.commands.demo": ["rairl.commands.files", "rairl.commands.files.x"],
                                       "rairl.commands.train": ["rairl.commands", "rairl.commands.files"]}
    assert layer_offenders(toy) == {"rairl.models.lm": ["rairl.train", "rairl.train.run"],
                                    "rairl.data": ["rairl.eval.policy"],
                                    "rairl.kernels.segments": ["rairl.plan"]}


def test_a_checkout_root_on_sys_path_leaves_the_name_kernels_to_hugging_faces_package():
    """`python -m pytest` or `python -c` in a checkout puts its root, where kernels/ (rairl.kernels) lies, first on
    sys.path; transformers >= 5.25 imports Hugging Face's `kernels`. The top-level name must load that package,
    and where none is installed (`python -S`: no site-packages) fail saying which folder it is not."""
    root = Path(rairl.kernels.__file__).resolve().parents[1]
    if not (root / "setup.py").exists():
        pytest.skip("rairl is installed, not run from a checkout")
    hf = importlib.machinery.PathFinder.find_spec("kernels", [p for p in sys.path if Path(p or ".").resolve() != root])
    run = subprocess.run([sys.executable, "-c", "import kernels; print(kernels.__file__)"], cwd=root, capture_output=True, text=True)
    if hf is None:
        assert run.returncode != 0 and "is the package rairl.kernels" in run.stderr
    else:
        assert run.returncode == 0, run.stderr
        assert Path(run.stdout.strip()).resolve() == Path(hf.origin).resolve()
    bare = subprocess.run([sys.executable, "-S", "-c", "import kernels"], cwd=root, capture_output=True, text=True)
    assert bare.returncode != 0 and f"outside {root}" in bare.stderr, bare.stderr
