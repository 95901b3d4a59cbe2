"""Open a chapter in a real JupyterLab and check what a learner sees (``make test-lab``).

    python -m book._labcheck [--chapter 06_schedules]

JupyterLab (with ``jupyterlab-myst``, which renders the markdown cells as MyST) is started
headless on 127.0.0.1 at a free port with a random token, from a temporary folder: a copy
of the chapter (so the working tree is never written to), and its own Jupyter config, data
and runtime folders, IPython folder, JupyterLab settings and workspaces, so no user setting
applies (the environment's own configuration in ``.venv/etc/jupyter`` does, as under
``make lab``). The chapter is opened in headless Chromium (Debian's ``/usr/bin/chromium``,
driven by Playwright, as in ``book._sitecheck``) at 1,280 px and checked; each check is
counted and reported by name:

``lab``         JupyterLab loads the notebook and jupyterlab-myst's plugins are active
``markdown``    every markdown cell is rendered by MyST, and no raw MyST or TeX (``{note}``,
                ``$...$``) is left in its text
``math``        every formula of the cells' markdown is typeset (by KaTeX, as many as the
                source holds outside directives JupyterLab does not know)
``admonitions`` every admonition (```` ```{note} ````, ...) is drawn as one
``run``         Run > Run All Cells (the menu) runs every code cell without an error
``figures``     every cell that shows a figure (``plotting.show``) has a loaded image
``explorer``    moving a slider of the chapter's explorer redraws its figure (a new PNG
                from the kernel)
``console``     the browser's console has no error, except jupyterlab-myst's own report
                of the cross references it cannot resolve (see below)
``offline``     no request leaves 127.0.0.1

What jupyterlab-myst does not render is counted and reported, not failed: ``{cite}``
(it does not read ``.bib`` files: the key is shown, marked "Citation Not Found"),
``{numref}`` to a glued figure ("Cross Reference Not Found"), ``{glue:text}`` (the glue key
is shown in place of the value) and ``{glue:figure}`` (an "Unknown Directive" box with the
caption's source; the figure itself is the output of the code cell that draws it). The
README says so.

Screenshots go to ``_build/lab-check/`` with a JSON report. The Lab server, its kernels and
the browser are stopped however the check ends (an error, Ctrl-C or SIGTERM; and the server
is told to stop if this process dies). Without Chromium or Playwright it fails with the
command that installs them; it never passes without having opened the notebook.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from book._sitecheck import CHROMIUM_ARGS, ChromiumMissing, Report, find_chromium, raw_markup

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHAPTER = "06_schedules"
VIEWPORT = {"width": 1280, "height": 900}
CHECKS = ("lab", "markdown", "math", "admonitions", "run", "figures", "explorer", "console", "offline")
START_TIMEOUT_S = 90  # the server answering, and the notebook rendered
RUN_TIMEOUT_S = 240  # Run All Cells (a chapter runs in under a minute on two cores)
REDRAW_TIMEOUT_S = 30
MYST_PLUGINS = ("jupyterlab-myst:mime-renderer", "jupyterlab-myst:content-factory")
# Admonitions as MyST (and Jupyter Book) name them.
ADMONITIONS = frozenset({"admonition", "attention", "caution", "danger", "error", "hint", "important", "note",
                         "seealso", "tip", "warning"})
# What jupyterlab-myst logs as an error when a cross reference has no target in the notebook: the
# {numref}s to glued figures, which the README says do not resolve in JupyterLab.
KNOWN_CONSOLE_ERRORS = (re.compile(r"^Cross reference target was not found"),)
# JupyterLab's own requests to the internet, turned off: the news feed and the update check
# (a notification setting, written into the temporary settings folder).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}


# --------------------------------------------------------------------------- the notebook's source

@dataclass
class CellSource:
    """What one markdown cell holds, as Jupyter Book's MyST parser reads it."""

    index: int  # the cell's position in the notebook (all cells counted)
    first_line: str
    math: int = 0  # formulas outside directives ($...$, $$...$$, amsmath), admonition bodies included
    math_in_unknown: int = 0  # formulas inside directives jupyterlab-myst does not know (glue:figure captions)
    admonitions: Counter = field(default_factory=Counter)
    roles: Counter = field(default_factory=Counter)
    directives: Counter = field(default_factory=Counter)
    glue_keys: list = field(default_factory=list)


def _md_parser():
    """Jupyter Book's MyST parser with the extensions ``_config.yml`` enables."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    return create_md_parser(
        MdParserConfig(enable_extensions={"amsmath", "colon_fence", "dollarmath", "linkify", "substitution"}),
        RendererHTML)


_OPTION_LINE = re.compile(r"^:[\w-]+:.*$")


def _directive_body(content: str) -> str:
    """A directive's body without its leading ``:option: value`` lines."""
    lines = content.splitlines()
    while lines and (_OPTION_LINE.match(lines[0].strip()) or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def _count(tokens, cell: CellSource, parser, inside_unknown: bool = False) -> None:
    for t in tokens:
        if t.type in ("math_inline", "math_block", "math_block_label", "amsmath", "math_inline_double"):
            if inside_unknown:
                cell.math_in_unknown += 1
            else:
                cell.math += 1
        elif t.type == "myst_role":
            name = t.meta.get("name", "")
            cell.roles[name] += 1
            if name.startswith("glue"):
                cell.glue_keys.append(t.content.strip())
        elif t.type in ("fence", "colon_fence") and (m := re.match(r"^\{([\w:-]+)\}", t.info.strip())):
            name = m.group(1)
            cell.directives[name] += 1
            if name in ADMONITIONS:
                cell.admonitions[name] += 1
            body_unknown = inside_unknown or not (name in ADMONITIONS or name == "math")
            if name == "math":
                if body_unknown:
                    cell.math_in_unknown += 1
                else:
                    cell.math += 1
                continue
            _count(parser.parse(_directive_body(t.content)), cell, parser, inside_unknown=body_unknown)
        if t.children:
            _count(t.children, cell, parser, inside_unknown)


def markdown_inventory(notebook: dict) -> list[CellSource]:
    """Every markdown cell of ``notebook`` (a parsed .ipynb) with its formulas, roles and directives.

    A directive's body is parsed too: an admonition's (jupyterlab-myst renders it), and any
    other's, whose formulas are counted apart (jupyterlab-myst shows an unknown directive's
    body as source).
    """
    parser = _md_parser()
    cells = []
    for index, c in enumerate(notebook["cells"]):
        if c["cell_type"] != "markdown":
            continue
        source = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        cell = CellSource(index, next((line.strip() for line in source.splitlines() if line.strip()), "")[:70])
        _count(parser.parse(source), cell, parser)
        cells.append(cell)
    return cells


def figure_cells(notebook: dict) -> list[int]:
    """The code cells that show a figure (``plotting.show(...)``), by position in the notebook."""
    return [i for i, c in enumerate(notebook["cells"])
            if c["cell_type"] == "code" and "plotting.show(" in "".join(c["source"])]


# ------------------------------------------------------------------------------- the Lab server

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM (and stops its kernels) if the check's process dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LabServer:
    """JupyterLab on 127.0.0.1 in a temporary home: ``with LabServer(root) as lab: lab.url(...)``.

    ``home`` holds Jupyter's config, data and runtime folders, IPython's folder and
    JupyterLab's settings and workspaces, so nothing of the user's applies. ``stop()`` (also
    on leaving the ``with``) shuts the server down through its API, then ends whatever is
    left of it and of its kernels.
    """

    def __init__(self, root_dir: Path, home: Path, log=print):
        self.root_dir, self.home, self.log = Path(root_dir), Path(home), log
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.home / "lab.log"
        self._log_file = None

    def env(self) -> dict:
        env = dict(os.environ)
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.home / sub)
        env["JUPYTER_PREFER_ENV_PATH"] = "1"  # the environment's kernels and extensions before any user's
        env.pop("JUPYTER_CONFIG_PATH", None)
        env.pop("JUPYTER_PATH", None)
        return env

    def command(self) -> list[str]:
        settings, workspaces = self.home / "lab-settings", self.home / "lab-workspaces"
        for name, values in LAB_SETTINGS.items():
            path = settings / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        workspaces.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
               "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the check reads cells' state
               "--LabApp.extension_manager=readonly",  # no PyPI look-ups
               "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        return cmd

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.root_dir, env=self.env(), stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches the check, which stops the server
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with status {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                if self.api("GET", "api/status", timeout=2).get("started"):
                    return
            time.sleep(0.25)
        raise RuntimeError(f"JupyterLab did not answer on {self.base} within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, timeout: float = 10) -> dict:
        req = urllib.request.Request(self.base + path, method=method, data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body.strip() else {}

    def url(self, path: str) -> str:
        return f"{self.base}{path}?token={self.token}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def processes(self) -> list:
        """The server and every process under it (its kernels), while it runs."""
        import psutil

        if self.proc is None:
            return []
        try:
            server = psutil.Process(self.proc.pid)
            return [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace: float = 15) -> list[str]:
        """Stop the server and its kernels; returns what had to be killed (empty when it shut down cleanly)."""
        import psutil

        if self.proc is None:
            return []
        procs = self.processes()  # kernels run in sessions of their own: remember them before the server goes
        forced = []
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                self.api("POST", "api/shutdown", timeout=5)  # shuts the kernels down, then the server
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                forced.append(f"server {self.proc.pid}")
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        alive = [p for p in procs if p.pid != self.proc.pid and p.is_running()
                 and p.status() != psutil.STATUS_ZOMBIE]
        if alive:
            _, alive = psutil.wait_procs(alive, timeout=3)  # kernels exit once their parent has gone
        for p in alive:
            forced.append(f"{p.name()} {p.pid}")
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(alive, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if self._log_file:
            self._log_file.close()
        self.proc = None
        return forced

    def __enter__(self) -> LabServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -------------------------------------------------------------------------- what runs in the page

_READY = r"""
() => {
  const w = window.jupyterapp && jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.context || !w.context.isReady) return false;
  const kernel = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  const md = [...w.content.widgets].filter(c => c.model.type === 'markdown');
  return !!kernel && kernel.status === 'idle' && md.every(c => c.rendered
      && c.node.querySelector('.myst, .jp-RenderedMarkdown'));
}
"""

_PLUGINS = r"""
(names) => ({
  federated: JSON.parse(document.getElementById('jupyter-config-data').textContent)
      .federated_extensions.map(e => e.name),
  plugins: names.map(n => [n, jupyterapp.hasPlugin(n) && jupyterapp.isPluginActivated(n)]),
})
"""

# Every markdown cell as rendered: its formulas, admonitions, what jupyterlab-myst marks as not
# found, unknown directives, and the text a reader sees outside code and typeset math.
_MARKDOWN = r"""
() => {
  const cells = [...jupyterapp.shell.currentWidget.content.widgets];
  const out = [];
  cells.forEach((cell, index) => {
    if (cell.model.type !== 'markdown') return;
    const node = cell.node;
    const myst = node.querySelector('.myst');
    const root = myst || node.querySelector('.jp-RenderedMarkdown');
    const q = s => root ? [...root.querySelectorAll(s)] : [];
    const unknown = q('details').filter(d => /Unknown Directive/.test((d.querySelector('summary') || d).textContent))
        .map(d => (d.querySelector('summary code') || {}).textContent || '?');
    const texts = [];
    if (root) {
      const skip = 'pre, code, .katex, svg, style, script, details > summary';
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      let n;
      const byParent = new Map();
      while ((n = walker.nextNode())) {
        const p = n.parentElement;
        if (!p || p.closest(skip) || !n.textContent.trim()) continue;
        byParent.set(p, (byParent.get(p) || '') + n.textContent);
      }
      for (const t of byParent.values()) texts.push(t);
    }
    out.push({
      index, rendered: !!cell.rendered, myst: !!myst,
      katex: q('.katex').length, katexErrors: q('.katex-error').map(e => e.textContent.slice(0, 80)),
      admonitions: q('.myst-admonition').map(a => ([...a.classList].find(c => /^myst-admonition-(?!default|header|body)/.test(c)) || 'myst-admonition-?').replace('myst-admonition-', '')),
      citationsNotFound: q('[title="Citation Not Found"]').map(e => e.textContent.trim()),
      xrefsNotFound: q('[title="Cross Reference Not Found"]').map(e => e.textContent.trim()),
      unknownDirectives: unknown,
      texts,
    });
  });
  return out;
}
"""

_RUN_STATE = r"""
() => {
  const w = jupyterapp.shell.currentWidget;
  const code = [...w.content.widgets].map((c, i) => [c, i]).filter(([c]) => c.model.type === 'code');
  const running = code.filter(([c]) => /\*/.test((c.node.querySelector('.jp-InputPrompt') || {}).textContent || ''));
  const errors = [];
  for (const [c, i] of code)
    for (const o of c.model.outputs.toJSON())
      if (o.output_type === 'error') errors.push({index: i, ename: o.ename, evalue: String(o.evalue).slice(0, 200)});
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  return {total: code.length, ran: code.filter(([c]) => c.model.executionCount !== null).length,
          running: running.map(([c, i]) => i), errors, kernel: kernel ? kernel.status : 'none'};
}
"""

_IMAGES = r"""
(indexes) => {
  const cells = [...jupyterapp.shell.currentWidget.content.widgets];
  return indexes.map(i => {
    const imgs = [...cells[i].node.querySelectorAll('.jp-OutputArea-output img')];
    return {index: i, images: imgs.length, loaded: imgs.filter(im => im.complete && im.naturalWidth > 0).length,
            widths: imgs.map(im => im.naturalWidth)};
  });
}
"""

# The explorer: a widget box with sliders and an image, in a code cell's output.
_EXPLORERS = r"""
() => [...jupyterapp.shell.currentWidget.content.widgets].map((c, index) => {
  const box = c.node.querySelector('.jp-OutputArea-output .widget-vbox');
  if (!box || !box.querySelector('.widget-slider') || !box.querySelector('.widget-image, img')) return null;
  return {index, sliders: [...box.querySelectorAll('.widget-slider .widget-label')].map(l => l.textContent.trim())};
}).filter(Boolean)
"""

_IMAGE_DIGEST = r"""
async (index) => {
  const cell = jupyterapp.shell.currentWidget.content.widgets[index];
  const img = cell.node.querySelector('.jp-OutputArea-output .widget-vbox img');
  if (!img || !img.src) return null;
  const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let h = 0x811c9dc5;  // FNV-1a over the PNG's bytes
  for (const b of bytes) { h ^= b; h = Math.imul(h, 0x01000193) >>> 0; }
  return {src: img.src, bytes: bytes.length, hash: h.toString(16), width: img.naturalWidth};
}
"""


# ------------------------------------------------------------------------------------ the checks

# (what the README says JupyterLab does not resolve, the count of those roles, the count shown unresolved)
_LIMITATIONS = (
    ("citations ({cite})", "{cite} roles", "{cite} shown as 'Citation Not Found'"),
    ("figure numbers ({numref})", "{numref} roles", "{numref} shown as 'Cross Reference Not Found'"),
    ("glued numbers ({glue:text})", "{glue:text} roles", "{glue:text} shown as their key"),
    ("glued figures ({glue:figure})", "{glue:figure} directives", "'Unknown Directive' boxes"),
)


def readme_notes(counts: Counter) -> list[str]:
    """What now resolves in JupyterLab although the README says it does not (a newer jupyterlab-myst)."""
    return [f"{what}: {counts[total] - counts[unresolved]} of {counts[total]} now resolve in JupyterLab; "
            "the README's paragraph on running notebooks says they do not: update it"
            for what, total, unresolved in _LIMITATIONS if counts[unresolved] < counts[total]]


class LabCheck:
    def __init__(self, page, lab: LabServer, name: str, notebook: dict, report: Report, shots: Path, log=print):
        self.page, self.lab, self.name, self.nb, self.report, self.shots, self.log = (
            page, lab, name, notebook, report, shots, log)
        self.console: list[str] = []
        self.external: list[str] = []
        self.screenshots: list[str] = []

    def fail(self, check: str, element: str, detail: str) -> None:
        self.report.fail(check, self.name, "", element, detail)

    def shoot(self, name: str, locator=None) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        try:
            (locator or self.page).screenshot(path=str(path))
            self.screenshots.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
        except Exception as e:  # noqa: BLE001 - a missing screenshot is reported, not fatal
            self.log(f"  (no screenshot {name}: {e})")

    def cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    # 1. the notebook opens, rendered by jupyterlab-myst
    def open(self, path: str) -> bool:
        rep = self.report
        self.page.goto(self.lab.url(f"lab/tree/{path}"), wait_until="load")
        try:
            self.page.wait_for_function(_READY, timeout=START_TIMEOUT_S * 1000, polling=250)
        except Exception as e:  # noqa: BLE001
            self.fail("lab", "the notebook", f"did not open with its markdown rendered and an idle kernel "
                                             f"within {START_TIMEOUT_S} s: {str(e).splitlines()[0]}")
            self.shoot("notebook-not-opened")
            return False
        rep.ok("lab")
        info = self.page.evaluate(_PLUGINS, list(MYST_PLUGINS))
        if "jupyterlab-myst" not in info["federated"]:
            self.fail("lab", "jupyterlab-myst", "is not among JupyterLab's extensions "
                      f"({', '.join(info['federated'])}): run `make install`")
        for plugin, active in info["plugins"]:
            if active:
                rep.ok("lab")
            else:
                self.fail("lab", plugin, "is not activated")
        rep.stats["extensions"] = info["federated"]
        self.shoot("notebook-top")
        return True

    # 2. markdown, math, admonitions; what does not resolve is counted
    def check_markdown(self) -> None:
        rep = self.report
        source = {c.index: c for c in markdown_inventory(self.nb)}
        rendered = {c["index"]: c for c in self.page.evaluate(_MARKDOWN)}
        limits = Counter()
        plain = []  # cells that JupyterLab's own markdown renderer drew
        for index, src in source.items():
            r = rendered.get(index)
            element = f"markdown cell {index} ({src.first_line!r})"
            if r is None or not r["rendered"]:
                self.fail("markdown", element, "is not rendered")
                continue
            if not r["myst"]:
                plain.append(index)
                continue
            rep.ok("markdown")
            raw = [(what, snippet) for text in r["texts"] for what, snippet in raw_markup(text)]
            for what, snippet in raw[:5]:
                self.fail("markdown", element, f"raw {what} in the text: {snippet[:80]!r}")
            if not raw:
                rep.ok("markdown")
            # math: jupyterlab-myst typesets with KaTeX; formulas in unknown directives stay source
            if r["katexErrors"]:
                self.fail("math", element, f"{len(r['katexErrors'])} formulas KaTeX could not typeset: "
                          f"{r['katexErrors'][0]!r}")
            if r["katex"] < src.math:
                self.fail("math", element, f"{r['katex']} of {src.math} formulas typeset")
            elif src.math:
                rep.ok("math")
            # admonitions
            want = Counter(src.admonitions)
            got = Counter(r["admonitions"])
            for kind, n in want.items():
                if got[kind] < n:
                    self.fail("admonitions", element,
                              f"{n - got[kind]} of {n} ```{{{kind}}}``` not drawn as an admonition")
                else:
                    rep.ok("admonitions")
            # what jupyterlab-myst cannot resolve in a notebook on its own
            limits["formulas typeset"] += r["katex"]
            limits["formulas in the source"] += src.math
            limits["formulas in glue:figure captions (shown as source)"] += src.math_in_unknown
            limits["admonitions"] += sum(got.values())
            limits["{cite} roles"] += sum(n for role, n in src.roles.items() if role.startswith("cite"))
            limits["{cite} shown as 'Citation Not Found'"] += len(r["citationsNotFound"])
            limits["{numref} roles"] += src.roles["numref"]
            limits["{numref} shown as 'Cross Reference Not Found'"] += len(r["xrefsNotFound"])
            limits["{glue:text} roles"] += src.roles["glue:text"] + src.roles["glue"]
            texts = " ".join(r["texts"])
            limits["{glue:text} shown as their key"] += sum(1 for k in src.glue_keys if k in texts)
            limits["{glue:figure} directives"] += src.directives["glue:figure"]
            limits["'Unknown Directive' boxes"] += len(r["unknownDirectives"])
            for name in r["unknownDirectives"]:
                limits[f"unknown directive {name}"] += 1
        if plain:
            self.fail("markdown", f"markdown cells {', '.join(map(str, plain))}",
                      f"{len(plain)} of {len(source)} markdown cells are rendered by JupyterLab's plain markdown "
                      "renderer, not by jupyterlab-myst (is it installed and enabled? `make install`)")
        rep.stats["markdown cells"] = len(source)
        rep.stats["rendering"] = dict(limits)
        rep.stats["notes"] = readme_notes(limits)
        self._shoot_first(".myst-admonition", "admonition")
        self._shoot_first('[title="Citation Not Found"]', "citation", closest="p, li, td")
        # a cell with a {glue:figure} box, {numref}s and {glue:text}s, as JupyterLab shows them
        self._shoot_first(".myst details", "glue-figure-cell", closest=".myst")

    def _shoot_first(self, selector: str, name: str, closest: str | None = None) -> None:
        loc = self.page.locator(f".jp-Notebook {selector}").first
        if loc.count() == 0:
            return
        if closest:
            loc.evaluate("(e, [s, name]) => e.closest(s) && e.closest(s).setAttribute('data-labcheck-shot', name)",
                         [closest, name])
            target = self.page.locator(f'[data-labcheck-shot="{name}"]').first
            if target.count():
                loc = target
        loc.scroll_into_view_if_needed()
        self.shoot(name, loc)

    # 3. Run > Run All Cells
    def run_all(self, timeout: float = RUN_TIMEOUT_S) -> bool:
        rep = self.report
        page = self.page
        self.cell(0).click()  # focus the notebook, as a reader would before using the menu
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        item = page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
        try:
            item.click(timeout=10_000)
        except Exception as e:  # noqa: BLE001
            self.fail("run", "Run > Run All Cells", f"the menu item was not found: {str(e).splitlines()[0]}")
            return False
        start = time.monotonic()
        state = page.evaluate(_RUN_STATE)
        while time.monotonic() - start < timeout:
            state = page.evaluate(_RUN_STATE)
            done = state["ran"] == state["total"] or state["errors"]
            if done and not state["running"] and state["kernel"] == "idle":
                break
            if state["kernel"] in ("dead", "unknown", "none"):
                break
            time.sleep(0.5)
        seconds = round(time.monotonic() - start, 1)
        rep.stats["run all cells"] = {"code cells": state["total"], "ran": state["ran"], "seconds": seconds}
        self.log(f"  ran {state['ran']} of {state['total']} code cells in {seconds} s")
        for err in state["errors"]:
            self.fail("run", f"code cell {err['index']}", f"{err['ename']}: {err['evalue']}")
        if state["kernel"] in ("dead", "unknown", "none"):
            self.fail("run", "the kernel", f"is {state['kernel']}: see {self.lab.log_path.name} in the report folder")
        elif not state["errors"] and (state["ran"] < state["total"] or state["running"]):
            where = f"; cell {state['running'][0]} was still running" if state["running"] else ""
            self.fail("run", "Run All Cells", f"{state['ran']} of {state['total']} code cells ran within "
                      f"{timeout:.0f} s{where}")
        elif not state["errors"]:
            rep.ok("run", state["total"])
        return not state["errors"] and state["ran"] == state["total"]

    # 4. figures in the code cells' outputs
    def check_figures(self) -> None:
        rep = self.report
        shown = figure_cells(self.nb)
        results = self.page.evaluate(_IMAGES, shown)
        for r in results:
            element = f"code cell {r['index']}"
            if r["loaded"] == 0:
                self.fail("figures", element, f"calls plotting.show but shows no loaded image "
                          f"({r['images']} <img> in its output)")
            else:
                rep.ok("figures")
        rep.stats["figures"] = {"cells that show one": len(shown),
                                "with a loaded image": sum(1 for r in results if r["loaded"])}
        if shown:
            out = self.cell(shown[0]).locator(".jp-OutputArea-output img").first
            if out.count():
                out.scroll_into_view_if_needed()
                self.shoot("figure-output", out)

    # 5. an explorer's slider redraws its figure
    def check_explorer(self) -> None:
        rep = self.report
        page = self.page
        explorers = page.evaluate(_EXPLORERS)
        if not explorers:
            self.fail("explorer", "the notebook", "no explorer (sliders above an image) in any cell's output")
            return
        index = explorers[0]["index"]
        cell = self.cell(index)
        box = cell.locator(".jp-OutputArea-output .widget-vbox").first
        slider = box.locator(".widget-slider").first
        label = (slider.locator(".widget-label").text_content() or "").strip()
        handle = slider.locator(".noUi-handle").first
        readout = slider.locator(".widget-readout")
        element = f"explorer in code cell {index}, slider {label!r}"
        box.scroll_into_view_if_needed()
        before = page.evaluate(_IMAGE_DIGEST, index)
        value_before = (readout.text_content() or "").strip()
        self.shoot("explorer-before", box)
        if before is None or before["width"] == 0:
            self.fail("explorer", element, "shows no image before the slider moves")
            return
        handle.focus()
        for _ in range(3):  # three steps right, as with the keyboard (a mouse drag does the same)
            handle.press("ArrowRight")
        deadline = time.monotonic() + REDRAW_TIMEOUT_S
        after = before
        while time.monotonic() < deadline:
            after = page.evaluate(_IMAGE_DIGEST, index)
            if after and after["hash"] != before["hash"] and after["width"] > 0:
                time.sleep(0.5)  # let the last of the three redraws land
                after = page.evaluate(_IMAGE_DIGEST, index)
                break
            time.sleep(0.25)
        value_after = (readout.text_content() or "").strip()
        rep.stats["explorer"] = {"cell": index, "slider": label, "value": [value_before, value_after],
                                 "png bytes": [before["bytes"], after["bytes"] if after else None]}
        if value_after == value_before:
            self.fail("explorer", element, f"did not move (still {value_before}) after three ArrowRight presses")
        elif after is None or after["hash"] == before["hash"]:
            self.fail("explorer", element, f"moved from {value_before} to {value_after}, but the figure was "
                      f"not redrawn within {REDRAW_TIMEOUT_S} s")
        else:
            rep.ok("explorer")
            self.log(f"  explorer: {label} {value_before} -> {value_after}, figure redrawn")
        self.shoot("explorer-after", box)

    def check_console_and_network(self) -> None:
        rep = self.report
        errors = [m for m in self.console if not any(p.search(m) for p in KNOWN_CONSOLE_ERRORS)]
        known = len(self.console) - len(errors)
        for message in errors[:10]:
            self.fail("console", "console", message[:300])
        if not errors:
            rep.ok("console")
        rep.stats["console errors"] = {"known (unresolved cross references)": known, "other": len(errors)}
        for url in sorted(set(self.external)):
            self.fail("offline", "request", f"to another host: {url}")
        if not self.external:
            rep.ok("offline")


def resolve_chapter(chapter: str) -> Path:
    """``06``, ``06_schedules``, ``chapters/06_schedules.ipynb`` -> the chapter's notebook."""
    p = Path(chapter)
    if p.suffix == ".ipynb" and (p if p.is_absolute() else ROOT / p).is_file():
        return (p if p.is_absolute() else ROOT / p).resolve()
    found = sorted((ROOT / "chapters").glob(f"{chapter}*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"no single chapter notebook matches {chapter!r} in chapters/ "
                                f"({len(found)} found)")
    return found[0]


def run(notebook_path: Path, chromium: str, out: Path, log=print) -> Report:
    """Start JupyterLab, open ``notebook_path`` in Chromium, run it and check it."""
    from playwright.sync_api import sync_playwright

    report = Report()
    notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    name = notebook_path.relative_to(ROOT).as_posix() if notebook_path.is_relative_to(ROOT) else notebook_path.name
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="book-labcheck-") as tmp:
        tmp = Path(tmp)
        root = tmp / "notebooks"
        root.mkdir()
        shutil.copy2(notebook_path, root / notebook_path.name)  # the check never writes to the working tree
        for extra in ("references.bib",):  # as beside the chapter in chapters/
            if (notebook_path.parent / extra).is_file():
                shutil.copy2(notebook_path.parent / extra, root / extra)
        lab = LabServer(root, tmp / "home", log=log)
        try:
            lab.start()
            report.stats["lab started in s"] = round(time.perf_counter() - start, 1)
            log(f"  JupyterLab on {lab.base} (started in {report.stats['lab started in s']} s)")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                try:
                    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, service_workers="block")
                    page = context.new_page()
                    check = LabCheck(page, lab, name, notebook, report, out, log=log)

                    def route(r):
                        url = r.request.url
                        if url.startswith(("data:", "blob:", "about:")) or url.startswith(lab.base):
                            r.continue_()
                        else:
                            check.external.append(url)
                            r.abort("blockedbyclient")

                    context.route("**/*", route)
                    page.on("console", lambda m: check.console.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e: check.console.append(f"uncaught {e}"))
                    if check.open(notebook_path.name):
                        report.pages_opened = 1
                        log(f"  opened {name}")
                        check.check_markdown()
                        if check.run_all():
                            check.check_figures()
                            check.check_explorer()
                        else:
                            check.shoot("run-failed")
                    check.check_console_and_network()
                    report.stats["screenshots"] = check.screenshots
                finally:
                    browser.close()
        finally:
            forced = lab.stop()
            if forced:
                report.stats["stopped by force"] = forced
            out.mkdir(parents=True, exist_ok=True)
            if lab.log_path.is_file():
                shutil.copy2(lab.log_path, out / "lab.log")
    report.stats["seconds"] = round(time.perf_counter() - start, 1)
    return report


def summary(report: Report) -> str:
    failed = report.failures()
    lines = [f"{'check':<12} {'checked':>8} {'failed':>7}"]
    for name in CHECKS:
        lines.append(f"{name:<12} {report.checked[name]:>8} {failed[name]:>7}")
    rendering = report.stats.get("rendering", {})
    if rendering:
        lines.append("in JupyterLab (jupyterlab-myst):")
        lines += [f"  {k}: {v}" for k, v in rendering.items()]
    lines += [f"NOTE {note}" for note in report.stats.get("notes", [])]
    rest = {k: v for k, v in report.stats.items() if k not in ("rendering", "screenshots", "notes")}
    lines.append(json.dumps(rest, sort_keys=True))
    return "\n".join(lines)


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the with-blocks: the server, its kernels and the browser stop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default=DEFAULT_CHAPTER,
                        help=f"the chapter to open: 06, 06_schedules or a path (default {DEFAULT_CHAPTER})")
    parser.add_argument("--chromium", help="the Chromium executable (default: $BOOK_CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "lab-check",
                        help="screenshots, report.json and the server's log (default _build/lab-check)")
    args = parser.parse_args(argv)

    try:
        chromium = find_chromium(args.chromium)
        import playwright.sync_api  # noqa: F401
    except ChromiumMissing as e:
        print(f"lab check: {e}", file=sys.stderr)
        return 2
    except ImportError:
        print("lab check: Playwright is not installed: run `make install` "
              "(or .venv/bin/pip install -c constraints.txt playwright)", file=sys.stderr)
        return 2
    try:
        notebook = resolve_chapter(args.chapter)
    except FileNotFoundError as e:
        print(f"lab check: {e}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if out.is_dir():
        for old in out.glob("*.png"):
            old.unlink()
    print(f"lab check: {notebook.relative_to(ROOT) if notebook.is_relative_to(ROOT) else notebook} "
          f"in JupyterLab, in {chromium}")
    previous = {s: signal.signal(s, _raise_on_sigterm) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        report = run(notebook, chromium, out)
    except KeyboardInterrupt:
        print("lab check: interrupted (JupyterLab and its kernels were stopped)", file=sys.stderr)
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(
        {"checked": report.checked, "failed": report.failures(), "pages_opened": report.pages_opened,
         "stats": report.stats, "problems": [asdict(p) for p in report.problems]},
        indent=1, default=lambda o: dict(o) if isinstance(o, Counter) else str(o)) + "\n")
    for problem in report.problems[:60]:
        print(f"FAIL {problem}")
    print(summary(report))
    if report.pages_opened < 1:
        print("lab check FAILED: the notebook was not opened in JupyterLab", file=sys.stderr)
        return 1
    if report.problems:
        print(f"lab check FAILED: {len(report.problems)} problems; screenshots and report in {out}")
        return 1
    print(f"lab check passed in {report.stats['seconds']} s; screenshots and report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
