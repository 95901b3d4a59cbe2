"""A Sphinx extension for the book build: a "Run this chapter" box on every chapter page.

The box sits right after the chapter's objectives ("After this chapter you can" and its
list) and says how to run the notebook (``make lab``, or ``jupyter lab chapters/NN_slug.ipynb``
in the book's environment), what it needs (a CPU; a GPU is used through
``book.utils.device()`` when present; ``BOOK_DEVICE``, ``BOOK_SEED``, ``BOOK_THREADS``), and
how long it took to run. That time is never typed by hand: it is the execution time that
myst-nb recorded for this page in this build, either measured just now or stored with the
executed notebook in the execution cache (``_build/.jupyter_cache``) when the chapter was
last executed, by the build or by the test suite's nbval run (``tests/test_book.py`` hands
those executions to the cache with their measured seconds). The device is read from the
chapter's own set-up cell, which prints ``computing on: ...``. The time covers the whole execution
in a fresh kernel, the kernel's start included. So the box can only be as old
as the outputs the page shows.

The directive ``{chapter-run-times}`` puts the same measurements for all chapters in one
table (the intro's "Run it" section). Like myst-nb's ``nb-exec-table`` it is a placeholder
filled in after every page was read, and a page holding it is written again whenever a
chapter was read (and so possibly executed) in the build.

The box is built from docutils nodes, so the HTML and the LaTeX (PDF) builds both show it.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path, PurePosixPath

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

CHAPTER = re.compile(r"^chapters/(\d\d)_[a-z0-9_]+$")
OBJECTIVES = "After this chapter you can"
DEVICE_LINE = re.compile(r"computing on:?\s+([A-Za-z0-9:_-]+)")
BOX_CLASS = "run-this-chapter"
TABLE_KEY = "has_chapter_run_times"


def is_chapter(docname: str) -> bool:
    return CHAPTER.match(docname) is not None


def format_seconds(seconds: float) -> str:
    """``21.79 -> "22 s"``, ``7.25 -> "7.2 s"``, ``75 -> "1 min 15 s"``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    return f"{whole // 60} min {whole % 60} s"


def format_day(timestamp: float) -> str:
    day = datetime.fromtimestamp(timestamp)
    return f"{day.day} {day:%B %Y}"


def exec_data(env, docname: str) -> dict | None:
    """What myst-nb recorded about executing ``docname`` in this build (None if not executed)."""
    metadata = getattr(env, "nb_metadata", None) or {}
    data = metadata.get(docname, {}).get("exec_data")
    return data if data and data.get("succeeded") and data.get("runtime") is not None else None


def computing_device(doctree) -> str | None:
    """The device a chapter's set-up cell printed (``computing on: cpu ...``), if any."""
    for node in doctree.findall(nodes.container):
        if node.get("nb_element") == "cell_code_output":
            found = DEVICE_LINE.search(node.astext())
            if found:
                return found.group(1)
    return None


def _paragraph(*pieces) -> nodes.paragraph:
    """A paragraph from strings, ``("code", text)`` and ``("strong", text)`` pieces."""
    para = nodes.paragraph()
    for piece in pieces:
        if isinstance(piece, str):
            para += nodes.Text(piece)
        elif piece[0] == "code":
            para += nodes.literal(piece[1], piece[1])
        else:
            para += nodes.strong(piece[1], piece[1])
    return para


def run_time_sentence(data: dict | None, device: str | None, cores: int | None) -> tuple:
    """The box's run-time paragraph: measured if the build has a measurement, never a guess."""
    if data is None:
        return (("strong", "Run time."), " Not measured: this build did not execute the chapter "
                "(the book's build executes it and shows the time it took here).")
    machine = "the machine that built this book"
    details = [f"{cores} CPU cores" if cores else None, f"computing on {device}" if device else None]
    details = [d for d in details if d]
    if details:
        machine += " (" + ", ".join(details) + ")"
    return (("strong", "Run time."), f" {format_seconds(data['runtime'])} to run all its cells in a fresh kernel, "
            f"measured on {machine} when it executed this chapter on {format_day(data['mtime'])}. "
            "Every chapter runs in under a minute on two CPU cores, and the test suite checks it.")


def run_box(docname: str, data: dict | None, device: str | None, cores: int | None) -> nodes.admonition:
    """The "Run this chapter" admonition for the chapter ``docname`` (``chapters/NN_slug``)."""
    notebook = f"{docname}.ipynb"
    box = nodes.admonition(classes=["tip", BOX_CLASS])
    box += nodes.title("", "Run this chapter")
    box += _paragraph(
        ("strong", "Run it."), " In a clone of the book's repository, ", ("code", "make lab"),
        " (it creates the environment on first use), then open ", ("code", notebook),
        " and run all cells. In the book's environment (the ", ("code", ".venv"),
        " that make creates, or the conda environment ", ("code", "optdl"), "): ",
        ("code", f"jupyter lab {notebook}"), ".")
    # on the site only (the PDF has no download button)
    download = addnodes.only(expr="html")
    download += _paragraph("The download button at the top of this page gives the notebook with the outputs "
                           "shown here.")
    box += download
    box += _paragraph(
        ("strong", "CPU or GPU."), " A CPU is enough. Where there is a CUDA GPU (or Apple's MPS) the "
        "chapter computes there, as ", ("code", "book.utils.device()"), " decides. Set ",
        ("code", "BOOK_DEVICE=cpu"), " (or ", ("code", "cuda"), ", ", ("code", "mps"), ") to choose, ",
        ("code", "BOOK_SEED=k"), " to shift every seed of the methods' randomness by k, and ",
        ("code", "BOOK_THREADS=n"), " for the number of CPU threads, e.g. ",
        ("code", "BOOK_DEVICE=cpu make lab"), ".")
    box += _paragraph(*run_time_sentence(data, device, cores))
    return box


def objectives_end(section: nodes.Element) -> int | None:
    """Index in ``section`` just after the objectives' list, or before its first code cell."""
    children = list(section.children)
    for i, child in enumerate(children):
        if isinstance(child, nodes.paragraph) and child.astext().strip().startswith(OBJECTIVES):
            for j in range(i + 1, len(children)):
                if isinstance(children[j], (nodes.bullet_list, nodes.enumerated_list)):
                    return j + 1
            break
    for i, child in enumerate(children):
        if isinstance(child, (nodes.section, nodes.container)):
            return i
    return None


def add_run_box(app, doctree) -> None:
    """``doctree-read``: put the box into a chapter's page, after its objectives."""
    env = app.env
    docname = env.docname
    if not is_chapter(docname) or not str(env.doc2path(docname)).endswith(".ipynb"):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    where = objectives_end(section)
    if where is None:
        return
    box = run_box(docname, exec_data(env, docname), computing_device(doctree), os.cpu_count())
    section.insert(where, box)


class ChapterRunTimesNode(nodes.General, nodes.Element):
    """Placeholder for the table of chapter run times (filled in once every page was read)."""


class ChapterRunTimes(SphinxDirective):
    """``{chapter-run-times}``: a table of each chapter's measured run time in this build."""

    has_content = False

    def run(self):
        from myst_nb.sphinx_ import NbMetadataCollector

        NbMetadataCollector.set_doc_data(self.env, self.env.docname, TABLE_KEY, True)
        return [ChapterRunTimesNode()]


def pages_with_tables(app, env):
    """``env-updated``: write the pages with the table again when a chapter was read."""
    from myst_nb.sphinx_ import NbMetadataCollector

    if not NbMetadataCollector.new_exec_data(env):
        return []
    return [d for d, data in NbMetadataCollector.get_doc_data(env).items() if data.get(TABLE_KEY)]


def _entry(*children) -> nodes.entry:
    return nodes.entry("", nodes.paragraph("", "", *children))


class ChapterRunTimesTable(SphinxPostTransform):
    default_priority = 8  # before the references are resolved (the chapter links are pending_xrefs)

    def run(self, **kwargs) -> None:
        from sphinx.addnodes import pending_xref

        for placeholder in list(self.document.findall(ChapterRunTimesNode)):
            chapters = sorted(d for d in self.env.found_docs if is_chapter(d))
            table = nodes.table(classes=["colwidths-auto", "chapter-run-times"])
            group = nodes.tgroup(cols=3)
            table += group
            for _ in range(3):
                group += nodes.colspec(colwidth=1)
            head = nodes.thead()
            head += nodes.row("", *(_entry(nodes.Text(t)) for t in ("Chapter", "Run time", "Executed on")))
            group += head
            body = nodes.tbody()
            group += body
            for docname in chapters:
                link = pending_xref("", refdoc=self.env.docname, refdomain="std", reftype="doc",
                                    reftarget="/" + docname, refexplicit=False, refwarn=True)
                link += nodes.literal(docname, PurePosixPath(docname).name)
                data = exec_data(self.env, docname)
                body += nodes.row("", _entry(link),
                                  _entry(nodes.Text(format_seconds(data["runtime"]) if data else "not executed")),
                                  _entry(nodes.Text(format_day(data["mtime"]) if data else "")))
            placeholder.replace_self(table)


def source_version() -> int:
    """A number that changes with this file: Sphinx reads every page again when an extension's
    ``env_version`` changes, so an edit of the box reaches pages whose sources did not change."""
    return int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8], 16)


def setup(app):
    app.connect("doctree-read", add_run_box)
    app.add_node(ChapterRunTimesNode)
    app.add_directive("chapter-run-times", ChapterRunTimes)
    app.connect("env-updated", pages_with_tables)
    app.add_post_transform(ChapterRunTimesTable)
    return {"version": "1", "env_version": source_version(), "parallel_read_safe": True,
            "parallel_write_safe": True}
