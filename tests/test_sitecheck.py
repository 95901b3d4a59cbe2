"""The browser check's parts that need no browser (the check itself is `make test-site`)."""

from __future__ import annotations

import urllib.request

import pytest

from book import _sitecheck as sc


@pytest.mark.parametrize(
    "text, found",
    [
        ("with convergence rate $O(1/k^2)$.", [("TeX between dollars", "$O(1/k^2)$")]),
        (r"the step \(\eta\) here", [("TeX delimiter", r"\("), ("TeX delimiter", r"\)"), ("TeX command", r"\eta")]),
        (r"$$\frac{1}{2}$$", [("TeX delimiter", "$$"), ("TeX delimiter", "$$"), ("TeX command", r"\frac")]),
        ("as shown by {cite}`kingma2015adam`", [("MyST role", "{cite}`")]),
        ("```{glue:figure} fig-01-x", [("MyST directive", "```{glue:figure}")]),
    ],
)
def test_raw_markup_is_found(text, found):
    assert sc.raw_markup(text) == found


@pytest.mark.parametrize("text", [
    "It costs $5 and $10.",                 # money
    "Adam (Kingma and Ba, 2015) [1]",       # brackets and parentheses are prose
    "f(x) = x^2 is typeset elsewhere",
    "a \\ b",                               # a lone backslash
])
def test_prose_is_not_raw_markup(text):
    assert sc.raw_markup(text) == []


def test_a_missing_chromium_names_the_command_that_installs_it(tmp_path, monkeypatch):
    monkeypatch.delenv("BOOK_CHROMIUM", raising=False)
    with pytest.raises(sc.ChromiumMissing, match="apt-get update && apt-get install -y chromium"):
        sc.find_chromium(str(tmp_path / "no-chromium"))
    monkeypatch.setenv("BOOK_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(sc.ChromiumMissing, match="is not an executable"):
        sc.find_chromium()


def test_the_check_fails_without_chromium_instead_of_passing(tmp_path, capsys):
    (tmp_path / "index.html").write_text("<p>a page</p>")
    assert sc.main([str(tmp_path), "--chromium", str(tmp_path / "no-chromium")]) != 0
    assert sc.INSTALL_CHROMIUM in capsys.readouterr().err


def test_the_check_needs_a_built_book(tmp_path, capsys):
    assert sc.main([str(tmp_path / "_build" / "html")]) != 0
    assert "make book" in capsys.readouterr().err


def test_the_site_is_served_on_localhost_only(tmp_path):
    (tmp_path / "page.html").write_text("<p>hello</p>")
    server, base = sc.serve(tmp_path)
    try:
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base + "page.html", timeout=10) as response:
            assert response.status == 200 and b"hello" in response.read()
    finally:
        server.shutdown()
        server.server_close()


def test_pages_are_the_html_files_outside_the_asset_folders(tmp_path):
    for name in ("index.html", "chapters/01_x.html", "_static/a.html", "_sources/b.html", "_images/c.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert sc.site_pages(tmp_path) == ["chapters/01_x.html", "index.html"]


def test_the_root_document_is_where_index_html_forwards(tmp_path):
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=chapters/intro.html" />')
    assert sc._root_document(tmp_path) == "chapters/intro.html"
    (tmp_path / "index.html").write_text("<p>a page</p>")
    assert sc._root_document(tmp_path) is None
