"""Read an answer's source without running it: what does it import and call?

An exercise asks the student to write an algorithm, so an answer that hands the work
to the library's own implementation (``torch.optim.SGD`` in an "implement SGD"
question, ``book.gd.newton`` in a "write Newton's step" question) earns nothing.
:func:`forbidden_uses` finds such uses, following import aliases
(``import torch.optim as O``; ``from book import gd``), and also flags the dynamic
escape hatches (``__import__``, ``importlib``, ``exec``, ``eval``, ``sys.modules``,
``getattr`` with a constant name) that would hide them.
"""

from __future__ import annotations

import ast
from typing import Iterable

DYNAMIC = {
    "__import__": "__import__",
    "importlib": "importlib",
    "exec": "exec",
    "eval": "eval",
    "compile": "compile",
    "sys.modules": "sys.modules",
    "builtins": "builtins",
    "__builtins__": "__builtins__",
    "globals": "globals",
    "ctypes": "ctypes",
    "gc.get_objects": "gc.get_objects",
    "gc.get_referrers": "gc.get_referrers",
}


class _Names(ast.NodeVisitor):
    """Collect every dotted name the code refers to, with aliases expanded."""

    def __init__(self):
        self.alias: dict[str, str] = {}
        self.names: set[str] = set()

    def visit_Import(self, node: ast.Import):
        for a in node.names:
            self.names.add(a.name)
            if a.asname:
                self.alias[a.asname] = a.name
            else:
                self.alias.setdefault(a.name.split(".")[0], a.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom):
        mod = node.module or ""
        for a in node.names:
            full = f"{mod}.{a.name}" if mod else a.name
            self.names.add(full)
            self.alias[a.asname or a.name] = full

    def _dotted(self, node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(self.alias.get(node.id, node.id))
            return ".".join(reversed(parts))
        return None

    def visit_Attribute(self, node: ast.Attribute):
        name = self._dotted(node)
        if name:
            self.names.add(name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name):
        self.names.add(self.alias.get(node.id, node.id))

    def visit_Call(self, node: ast.Call):
        # getattr(obj, "name") is obj.name written to dodge a reader
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
            base = self._dotted(node.args[0])
            if base and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                self.names.add(f"{base}.{node.args[1].value}")
        self.generic_visit(node)


def _parse(sources: Iterable[str]) -> list[ast.Module]:
    trees = []
    for src in sources:
        try:
            trees.append(ast.parse(src))
        except SyntaxError:
            continue
    return trees


def referenced_names(sources: Iterable[str], function: str | None = None) -> set[str]:
    """Every dotted name the given cells use (cells that do not parse are skipped).

    With ``function``, only what that function can reach counts: its own body, the
    bodies of other top-level functions it calls (transitively), and top-level
    statements other than imports (``G = torch.optim.SGD`` at top level counts;
    ``import torch`` alone does not). Import aliases from every cell apply.
    """
    trees = _parse(sources)
    aliases = _Names()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                aliases.visit(node)
    if function is None:
        v = _Names()
        for tree in trees:
            v.visit(tree)
        return v.names
    defs = {}
    top = []
    for tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs[node.name] = node  # the last definition wins, as when the cells run
            elif not isinstance(node, (ast.Import, ast.ImportFrom)):
                top.append(node)
    names: set[str] = set()
    todo, done = [function], set()
    while todo:
        name = todo.pop()
        if name in done or name not in defs:
            continue
        done.add(name)
        v = _Names()
        v.alias = dict(aliases.alias)
        v.visit(defs[name])
        names |= v.names
        todo.extend(n for n in v.names if n in defs)
    v = _Names()
    v.alias = dict(aliases.alias)
    for node in top:
        v.visit(node)
    return names | v.names


def _matches(name: str, target: str) -> bool:
    return name == target or name.startswith(target + ".")


def forbidden_uses(sources: Iterable[str], forbidden: Iterable[str], function: str | None = None) -> list[str]:
    """The forbidden names (and dynamic escape hatches) that ``function`` can reach."""
    names = referenced_names(list(sources), function)
    found = {t for t in forbidden for n in names if _matches(n, t)}
    found |= {label for key, label in DYNAMIC.items() for n in names if _matches(n, key)}
    return sorted(found)


def forbidden_message(names: Iterable[str], dynamic: bool = False) -> str:
    """The verdict's sentence for an answer that uses (or ran) forbidden implementations."""
    return (f"your answer uses {', '.join(names)}: this question asks you to write the algorithm "
            "yourself, not to call the library's implementation"
            + (" (or to load code dynamically)" if dynamic else ""))
