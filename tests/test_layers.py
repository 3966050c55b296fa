"""The layers point one way and no module imports itself in a circle.

front-ends   talesmith.cli, talesmith.tui       (cli may open the app; the app never imports cli)
library      talesmith.convert                  (imports runtime's library code only)
             talesmith.runtime                  (imports neither convert nor a front-end)

Imports are read from the source with `ast`, including those inside functions, so a lazy import
cannot hide a cycle or a layer pointing upwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "runtime": "talesmith.runtime",
    "convert": "talesmith.convert",
    "cli": "talesmith.cli",
    "tui": "talesmith.tui",
}
# What each part may not import.
FORBIDDEN = {
    "talesmith.runtime": ("talesmith.convert", "talesmith.cli", "talesmith.tui"),
    "talesmith.convert": ("talesmith.cli", "talesmith.tui"),
    "talesmith.tui": ("talesmith.cli", "talesmith.convert"),
    "talesmith.cli": (),
}
# Inside the runtime: its top-level base modules import nothing above them.
RUNTIME_BASE = ("talesmith.runtime.errors", "talesmith.runtime.settings", "talesmith.runtime.files")


def modules() -> dict[str, Path]:
    found = {}
    for folder, dotted in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([dotted, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the longest known module the name is (or lies in)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_every_part_is_found():
    g = graph()
    for dotted in PACKAGES.values():
        assert any(m.startswith(dotted + ".") for m in g), dotted
    assert "talesmith.cli.main" in g and "talesmith.runtime.engine.generate" in g


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_layer_imports_a_higher_one(part):
    bad = [
        (m, t)
        for m, targets in graph().items()
        if m == part or m.startswith(part + ".")
        for t in targets
        if any(t == f or t.startswith(f + ".") for f in FORBIDDEN[part])
    ]
    assert bad == []


def test_the_runtime_base_imports_nothing_above_it():
    g = graph()
    bad = [(m, t) for m in RUNTIME_BASE if m in g for t in g[m] if t not in RUNTIME_BASE and t != "talesmith.runtime"]
    assert bad == []


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            # a package's __init__ is not a dependency of its own modules' cycle check
            if m.startswith(t + "."):
                continue
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycles():
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
