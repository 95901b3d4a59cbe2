"""The package's layers: kernels import nothing above them.

Kernels (optimizers, schedules, losses, normalization, regularization, gradient descent,
landscapes, the practice helpers) may import torch, ``book.utils`` and ``book.checks`` only; training procedures
(``book.train``, ``book.data``) sit above them, display (``book.plotting``, ``book.widgets``)
above those, and grading beside. Every import statement counts, inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"
KERNELS = sorted([*(BOOK / "optim").glob("*.py"), *(BOOK / "practice").glob("*.py"),
                  *(BOOK / f"{name}.py" for name in
                    ("schedules", "losses", "normalization", "regularization", "gd", "landscapes", "precision", "scaling",
                     "sharpness", "checks", "utils"))])
ABOVE = {"train", "data", "plotting", "widgets", "grading", "speed", "runs"}


def imported_book_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a ``book`` module in the file, wherever it stands."""
    package = ".".join(path.relative_to(BOOK.parent).with_suffix("").parts[:-1])  # e.g. book.optim
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            if module in ("book", "book.optim"):  # from book import plotting
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return [(line, m) for line, m in found if m == "book" or m.startswith("book.")]


@pytest.mark.parametrize("path", KERNELS, ids=[str(p.relative_to(BOOK)) for p in KERNELS])
def test_kernels_import_nothing_above_them(path):
    bad = [f"line {line}: imports {module}" for line, module in imported_book_modules(path)
           if len(module.split(".")) > 1 and module.split(".")[1] in ABOVE]
    assert not bad, f"{path.relative_to(BOOK)} is a kernel module but reaches up:\n" + "\n".join(bad)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    """The test above would catch the import that used to be in book/schedules.py."""
    fake = BOOK / "_layers_probe.py"
    fake.write_text("def plot(self):\n    from book import plotting\n    import book.train as t\n")
    try:
        modules = {m for _, m in imported_book_modules(fake)}
    finally:
        fake.unlink()
    assert {"book.plotting", "book.train"} <= modules


def test_the_lr_range_test_lives_beside_the_training_loop():
    import book.schedules
    import book.train

    assert hasattr(book.train, "lr_range_test") and hasattr(book.train, "LRRangeResult")
    assert not hasattr(book.schedules, "lr_range_test")  # moved, not re-exported
