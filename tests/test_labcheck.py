"""The JupyterLab check's parts that need no browser (the check itself is `make test-lab`)."""

from __future__ import annotations

from collections import Counter

import psutil
import pytest

from book import _labcheck as lc
from book._sitecheck import INSTALL_CHROMIUM


def notebook(*cells):
    return {"cells": [{"cell_type": kind, "source": source, "metadata": {}} for kind, source in cells],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_markdown_inventory_counts_what_jupyterlab_myst_should_render():
    nb = notebook(
        ("markdown", "# Title\n\nA rate $\\eta$ and $O(1/k^2)$.\n\n$$\nf(x) = x^2\n$$\n"),
        ("code", "plotting.show(fig, 'fig-01-x')"),
        ("markdown", "As {cite}`kingma2015adam` and {cite:p}`loshchilov2019` show, "
                     "{numref}`fig-01-x` is {glue:text}`ch01-ratio:.1f` times lower.\n\n"
                     "```{glue:figure} fig-01-x\n:name: fig-01-x\n\nThe rate $\\eta_t$ over steps.\n```\n\n"
                     "```{note}\nA note with $\\beta_2$.\n```\n"),
    )
    first, second = lc.markdown_inventory(nb)
    assert (first.index, first.first_line, first.math, first.math_in_unknown) == (0, "# Title", 3, 0)
    assert second.index == 2
    assert second.roles == {"cite": 1, "cite:p": 1, "numref": 1, "glue:text": 1}
    assert second.glue_keys == ["ch01-ratio:.1f"]
    assert second.directives == {"glue:figure": 1, "note": 1}
    assert second.admonitions == {"note": 1}
    assert second.math == 1  # in the note, which jupyterlab-myst renders
    assert second.math_in_unknown == 1  # in the glue:figure caption, which it shows as source


def test_figure_cells_are_the_code_cells_that_call_plotting_show():
    nb = notebook(("markdown", "plotting.show(fig, 'x') in prose"), ("code", "x = 1"),
                  ("code", ["fig, ax = plotting.subplots()\n", "plotting.show(fig, 'fig-01-a')"]))
    assert lc.figure_cells(nb) == [2]


def test_a_chapter_is_found_by_number_slug_or_path():
    path = lc.ROOT / "chapters" / "06_schedules.ipynb"
    assert lc.resolve_chapter("06") == path
    assert lc.resolve_chapter("06_schedules") == path
    assert lc.resolve_chapter("chapters/06_schedules.ipynb") == path
    with pytest.raises(FileNotFoundError, match="no single chapter"):
        lc.resolve_chapter("99")


def test_the_check_fails_without_chromium_instead_of_passing(tmp_path, capsys):
    assert lc.main(["--chromium", str(tmp_path / "no-chromium"), "--out", str(tmp_path / "out")]) != 0
    assert INSTALL_CHROMIUM in capsys.readouterr().err


def test_the_lab_server_is_private_and_leaves_nothing_behind(tmp_path):
    """JupyterLab on 127.0.0.1 with a token and a home of its own; stopping it ends its kernels too."""
    (tmp_path / "notebooks").mkdir()
    lab = lc.LabServer(tmp_path / "notebooks", tmp_path / "home", log=lambda *a: None)
    env = lab.env()
    assert env["JUPYTER_CONFIG_DIR"].startswith(str(tmp_path)) and env["IPYTHONDIR"].startswith(str(tmp_path))
    assert "--ServerApp.ip=127.0.0.1" in lab.command() and len(lab.token) >= 32
    with lab:
        assert lab.base.startswith("http://127.0.0.1:")
        with pytest.raises(Exception, match="403|401"):  # no token, no access
            import urllib.request

            urllib.request.urlopen(lab.base + "api/kernels", timeout=10)
        kernel = lab.api("POST", "api/kernels", timeout=60)
        assert kernel["id"]
        procs = lab.processes()
        assert len(procs) >= 2, "the server and the kernel it started"
    assert lab.proc is None
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_a_limitation_that_goes_away_is_reported_for_the_readme():
    counts = {"{cite} roles": 22, "{cite} shown as 'Citation Not Found'": 22,
              "{glue:text} roles": 34, "{glue:text} shown as their key": 30}
    notes = lc.readme_notes(Counter(counts))
    assert len(notes) == 1 and notes[0].startswith("glued numbers ({glue:text}): 4 of 34 now resolve")
