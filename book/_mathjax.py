"""A Sphinx extension for the book build: typeset the math without the internet.

Jupyter Book loads MathJax from a CDN, so a reader who opens the built book offline
sees TeX source instead of formulas. The ``jupyter-server-mathjax`` package (a
dependency of the book's build tools) ships MathJax 2.7; this extension copies it into
the built site (``_build/html/_static/mathjax``) after every HTML build, and
``_config.yml`` points Sphinx's ``mathjax_path`` at that copy. The site then renders its
math from its own files, online or off.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MATHJAX_DIR = "mathjax"  # under the site's _static/


def mathjax_source() -> Path:
    """The folder holding MathJax.js in the installed ``jupyter_server_mathjax``."""
    try:
        import jupyter_server_mathjax
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "the book build needs jupyter-server-mathjax (it ships the MathJax files the site uses): "
            "pip install jupyter-server-mathjax, or run `make book`, which installs it"
        ) from e
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (src / "MathJax.js").is_file():  # pragma: no cover
        raise RuntimeError(f"no MathJax.js in {src}")
    return src


def copy_mathjax(app, exception) -> None:
    """After a successful HTML build, copy MathJax into the site (once; kept afterwards)."""
    if exception is not None or getattr(app.builder, "format", None) != "html":
        return
    dst = Path(app.outdir) / "_static" / MATHJAX_DIR
    if not (dst / "MathJax.js").is_file():
        shutil.copytree(mathjax_source(), dst, dirs_exist_ok=True)


def setup(app):
    mathjax_source()  # fail early, with a clear message, when the package is missing
    app.connect("build-finished", copy_mathjax)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
