"""Keep the book's execution cache honest (used by ``make book`` and the test suite).

Jupyter Book caches executed notebooks in ``_build/.jupyter_cache``, keyed by the
code in the notebook. A chapter's outputs also depend on the ``book`` package it
imports, which that key does not see. So we store a fingerprint of the package's
sources next to the cache and empty the cache when the fingerprint changes: after an
edit to ``book/``, every chapter is executed again; otherwise an unchanged chapter is
reused.

The test suite executes every chapter with nbval and hands the executed notebooks
to the cache (:func:`cache_executed_notebook`), so the book build that follows in the
same run does not execute them a second time.

Run ``python -m book._bookbuild [ROOT]`` to synchronise the cache by hand.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FINGERPRINT_FILE = "book-sources.sha256"
# The build and check tools: no chapter imports them, so editing one leaves the chapters' outputs
# as they were and must not send every chapter through execution again.
BUILD_TOOLS = ("_bookbuild.py", "_claims.py", "_labcheck.py", "_mathjax.py", "_pdf.py", "_runbox.py", "_sitecheck.py",
               "_theme.py")


def cache_dir(root: Path) -> Path:
    """Where Jupyter Book keeps executed notebooks for the book rooted at ``root``."""
    return Path(root) / "_build" / ".jupyter_cache"


def library_fingerprint(package: Path = PACKAGE) -> str:
    """A SHA-256 over the path and contents of every ``.py`` file in the package
    (the build tools in :data:`BUILD_TOOLS` left out)."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts or path.relative_to(package).as_posix() in BUILD_TOOLS:
            continue
        h.update(path.relative_to(package).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def sync_cache(root: Path) -> bool:
    """Empty the execution cache if the library changed since it was filled.

    Returns True when the cache was emptied.
    """
    cache = cache_dir(root)
    stamp = cache.parent / FINGERPRINT_FILE
    current = library_fingerprint()
    stale = stamp.exists() and stamp.read_text().strip() != current
    if stale or (cache.exists() and not stamp.exists()):
        shutil.rmtree(cache, ignore_errors=True)
        # Sphinx re-reads only the sources whose files changed, so without this an unchanged
        # chapter would keep the outputs (and run time) of the old library in its stored doctree.
        shutil.rmtree(cache.parent / ".doctrees", ignore_errors=True)
        emptied = True
    else:
        emptied = False
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n")
    return emptied


def cache_executed_notebook(root: Path, path: Path, nb, seconds: float) -> None:
    """Store an executed notebook (outputs filled in) so the book build reuses it.

    ``nb`` must have the same code cells and cell metadata as the file at ``path``;
    its outputs are what the build will show.
    """
    import nbformat  # slow to import: only here, never on `import book`
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    sync_cache(root)
    nbformat.validate(nb)
    cache = get_cache(str(cache_dir(root)))
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(Path(path).resolve()), data={"execution_seconds": seconds}),
        check_validity=False,
        overwrite=True,
    )


if __name__ == "__main__":  # pragma: no cover
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    if sync_cache(root):
        print("book/ changed since the chapters were executed: they will be executed again")
