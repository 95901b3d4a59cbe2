"""A Sphinx extension for ``make pdf`` (Jupyter Book's LaTeX builder): what the PDF needs that the site does not.

- **Chapter numbers once.** A chapter's title carries its number (``# 1. Optimization and deep
  learning``), because the site's table of contents is not numbered. LaTeX numbers chapters
  itself, so the PDF would open chapter one with "Chapter One" above "1. Optimization and deep
  learning" and list it as "1 1. Optimization ..." in its contents. In the LaTeX build the number
  is taken off the title.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform

CHAPTER = re.compile(r"^chapters/\d\d_[a-z0-9_]+$")
NUMBER = re.compile(r"^\d+\.\s+")


def strip_number(title: nodes.title) -> bool:
    """Take a leading ``"N. "`` off a title; True if there was one."""
    for text in title.findall(nodes.Text):
        if NUMBER.match(str(text)):
            text.parent.replace(text, nodes.Text(NUMBER.sub("", str(text), count=1)))
            return True
        return False
    return False


class ChapterTitlesWithoutNumbers(SphinxPostTransform):
    """In the LaTeX build (one document of all pages), drop "N. " from each chapter's title."""

    builders = ("latex",)
    default_priority = 400

    def run(self, **kwargs) -> None:
        for start in self.document.findall(addnodes.start_of_file):
            if not CHAPTER.match(start.get("docname", "")):
                continue
            section = next(iter(start.findall(nodes.section)), None)
            if section is not None and section.children and isinstance(section[0], nodes.title):
                strip_number(section[0])


def setup(app):
    app.add_post_transform(ChapterTitlesWithoutNumbers)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
