"""A Sphinx extension for the book build: what the theme and its extensions get wrong here.

Each fix was found by the browser check (``make test-site``, :mod:`book._sitecheck`):

- **Scripts included twice.** Sphinx 7.4 re-adds an inline script that an extension
  registered after the builder started (sphinx-thebe's and sphinx-togglebutton's
  configuration) because it compares ``None`` with ``""`` as file names; the second
  ``const THEBE_JS_URL`` is a console error on every page. Each page's scripts are
  de-duplicated.
- **Math in the bibliography.** A ``$...$`` in a ``.bib`` title reaches the page as text,
  on a page that does not even load MathJax. Such spans become math nodes, and the page
  is marked as having equations so that MathJax is loaded for it.
- **Notebooks that download without results.** The download button offers the page's
  source from ``_sources/``, which for a chapter is the notebook as committed, without
  outputs. After the build, each notebook there is replaced by the one the page was
  rendered from (myst-nb's ``jupyter_execute/`` copy: executed for chapters, as written
  for exercises and solutions).
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

DOLLAR_MATH = re.compile(r"(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\$)")


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated scripts from a page (same file or same inline body and attributes)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept


class BibliographyMath(SphinxPostTransform):
    """Typeset ``$...$`` in bibliography entries (titles such as "... rate $O(1/k^2)$")."""

    default_priority = 900  # after sphinxcontrib-bibtex has filled in the entries
    formats = ("html",)

    def run(self, **kwargs) -> None:
        found = False
        for citation in self.document.findall(nodes.citation):
            for text in list(citation.findall(nodes.Text)):
                if isinstance(text.parent, (nodes.math, nodes.literal, nodes.raw)):
                    continue
                pieces = split_dollar_math(str(text))
                if not any(is_math for is_math, _ in pieces):
                    continue
                found = True
                new = [nodes.math(part, part) if is_math else nodes.Text(part) for is_math, part in pieces]
                text.parent.replace(text, new)
        if found:
            math = self.env.get_domain("math")
            math.data.setdefault("has_equations", {})[self.env.docname] = True


def split_dollar_math(text: str) -> list[tuple[bool, str]]:
    """``"rate $O(1/k^2)$."`` -> ``[(False, "rate "), (True, "O(1/k^2)"), (False, ".")]``."""
    pieces, last = [], 0
    for m in DOLLAR_MATH.finditer(text):
        if m.start() > last:
            pieces.append((False, text[last:m.start()]))
        pieces.append((True, m.group(1)))
        last = m.end()
    if last < len(text):
        pieces.append((False, text[last:]))
    return pieces or [(False, text)]


def executed_notebook(app, docname: str):
    """The notebook ``docname`` as the page shows it: with the outputs of its execution.

    Jupyter Book's execution cache (``execute_notebooks: cache``) holds the executed copy;
    myst-nb's own ``jupyter_execute/`` copy is no help there, since on a cache hit myst-nb
    writes the notebook it read, without the outputs it merged in. Without the cache
    (``force``/``auto``), ``jupyter_execute/`` holds the executed notebook. None for a
    notebook that was not executed (exercises, solutions).
    """
    import nbformat

    source = Path(app.env.doc2path(docname))
    nb_config = getattr(app.env, "mystnb_config", None)
    cache_path = getattr(nb_config, "execution_cache_path", None)
    if cache_path and Path(cache_path).is_dir():
        from jupyter_cache import get_cache

        try:
            return get_cache(cache_path).merge_match_into_notebook(nbformat.read(source, as_version=4))[1]
        except KeyError:  # not in the cache
            pass
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{docname}.ipynb"
    if executed.is_file():
        nb = nbformat.read(executed, as_version=4)
        if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            return nb
    return None


def executed_notebook_downloads(app, exception) -> None:
    """Offer each notebook page's executed notebook as its download (``_sources/``)."""
    if exception is not None or getattr(app.builder, "format", None) != "html":
        return
    import nbformat

    sources = Path(app.outdir) / "_sources"
    for docname in sorted(app.env.found_docs):
        if not str(app.env.doc2path(docname)).endswith(".ipynb"):
            continue
        # Sphinx names the copy docname.ipynb plus html_sourcelink_suffix ("" in Jupyter Book)
        names = {f"{docname}.ipynb", f"{docname}.ipynb{app.config.html_sourcelink_suffix}"}
        targets = [sources / name for name in sorted(names) if (sources / name).is_file()]
        if not targets:
            continue
        nb = executed_notebook(app, docname)
        if nb is None:
            continue
        text = nbformat.writes(nb) + "\n"
        for target in targets:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after every script was added
    app.add_post_transform(BibliographyMath)
    app.connect("build-finished", executed_notebook_downloads)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": False}
