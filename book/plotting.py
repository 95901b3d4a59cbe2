"""One figure style for the whole book, and small helpers that draw data onto Axes.

Every helper takes data (or a landscape to evaluate on a grid) and an optional
``ax``, draws, and returns the Axes: no training happens here and no global figure
state is kept. A chapter calls :func:`use_style` once at the top.

The figure policy, set here once so every chapter inherits it: a figure is drawn at the
size the book shows it, :data:`PAGE_WIDTH` inches wide at :data:`DPI` dots per inch (the
width of the book's text column in CSS pixels), so a 9-point tick label is about 12 pixels
on the page. :func:`subplots` makes figures of that width. :func:`show` displays a figure in
the notebook and records it (myst-nb's ``glue``) for a numbered, captioned figure in the
rendered book::

    fig, (ax1, ax2) = plotting.subplots(1, 2)
    ...
    plotting.show(fig, "fig-06-noise-floor")   # cell tagged remove-output

and, in the next markdown cell::

    ```{glue:figure} fig-06-noise-floor
    :name: fig-06-noise-floor

    What to look at in this figure.
    ```

    >>> from book import plotting
    >>> from book.landscapes import rosenbrock
    >>> plotting.use_style()
    >>> ax = plotting.contour(rosenbrock, log=True)
"""

from __future__ import annotations

import io
import math
from typing import Callable, Mapping, Sequence

import matplotlib
import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "COLORS",
    "STYLE",
    "use_style",
    "color",
    "plain_log_ticks",
    "grid",
    "contour",
    "surface",
    "trajectory",
    "gradient_field",
    "curves",
    "to_png",
    "PAGE_WIDTH",
    "DPI",
    "subplots",
    "show",
]

# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
COLORS = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # green
    "#CC79A7",  # purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: poor on white)
]

PAGE_WIDTH = 7.0
"""The width of a full-width figure, in inches: the book's text column at :data:`DPI`."""

DPI = 100
"""Dots per inch of every figure, on screen and in the book (one dot, one CSS pixel)."""

STYLE: dict = {
    "figure.figsize": (PAGE_WIDTH, 3.8),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.prop_cycle": matplotlib.cycler(color=COLORS),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}
"""The rcParams every figure in the book uses."""


def use_style() -> None:
    """Apply the book's figure style (call once at the top of a notebook)."""
    matplotlib.rcParams.update(STYLE)


def subplots(nrows: int = 1, ncols: int = 1, height: float | None = None, width: float = PAGE_WIDTH, **kwargs):
    """``plt.subplots`` at the book's width: ``(fig, axes)``.

    Args:
        nrows, ncols: the grid of panels.
        height: the figure's height in inches; by default 3.8 for one panel per row and
            2.9 per row for several, so panels stay about as tall as they are wide.
        width: the figure's width in inches; at most :data:`PAGE_WIDTH` (a wider figure
            would be shrunk on the page, and its labels with it).
        **kwargs: passed on to ``plt.subplots`` (``sharex``, ``gridspec_kw``, ...).

    Raises:
        ValueError: for a width above :data:`PAGE_WIDTH` or a non-positive size.
    """
    if not 0 < width <= PAGE_WIDTH:
        raise ValueError(f"width must be in (0, {PAGE_WIDTH}] inches (the page's width), got {width}")
    if height is None:
        height = nrows * (3.8 if ncols == 1 else 2.9)
    if height <= 0:
        raise ValueError(f"height must be positive, got {height}")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def show(fig, name: str) -> None:
    """Show ``fig`` in the notebook and record it under ``name`` for the rendered book.

    ``fig`` is a matplotlib figure or an explorer from :mod:`book.widgets` (whose first
    drawing is recorded; the live controls are shown in the notebook). A figure is rendered
    once, to the PNG a notebook would show, and those bytes are both shown and recorded with
    :func:`glue`: a ``{glue:figure}`` directive in a markdown cell places the figure with a
    numbered caption, and the cell that calls this is tagged ``remove-output`` so the book
    does not show it twice.

    Raises:
        ValueError: if ``name`` is not of the form ``fig-...`` (letters, digits, dashes).
    """
    import re

    from IPython.display import Image, display

    if not isinstance(name, str) or not re.fullmatch(r"fig-[a-z0-9-]+", name):
        raise ValueError(f"a figure's name looks like 'fig-06-noise-floor' (lower case, digits, dashes), got {name!r}")
    is_figure = isinstance(fig, matplotlib.figure.Figure)
    if not is_figure and not hasattr(fig, "png"):
        raise TypeError(f"show expects a matplotlib Figure or an explorer, got {type(fig).__name__}")
    if is_figure:
        # Render the PNG once and show and record those bytes: handing the figure itself to glue and to display
        # made IPython render it for each (twice each, with the tight bounding box), 0.3 s more per figure.
        png = _inline_png(fig)
        plt.close(fig)  # shown once: pyplot would draw it again at the end of the cell
        if png is None:  # an empty figure: nothing to show or record
            return
        image = Image(data=png, format="png")
        glue(name, image, display=False)
        display(image)
    else:
        glue(name, Image(data=fig.png(), format="png"), display=False)
        display(fig)


#: The MIME-type prefix under which :func:`glue` records a value without showing it (myst-nb's and papermill's).
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value, display: bool = True) -> None:
    """Record ``value`` under ``name`` for the rendered book: ``myst_nb.glue``, without its import cost.

    A ``{glue}`` role or ``{glue:figure}`` directive in the book pastes what was recorded. The
    output is myst-nb's own (a test checks the two agree): ``value``'s display formats, each
    under :data:`GLUE_PREFIX` when ``display`` is False (recorded, not shown), with the
    metadata ``{"scrapbook": {"name": name, "mime_prefix": ...}}`` that the build reads.
    Why not call myst-nb's: its glue module imports ``nbformat`` and, through it,
    ``jsonschema``'s format checkers, which build a grammar at import time; that cost about a
    second of every chapter's run (myst-nb 1.4, jsonschema 4.26, rfc3987-syntax 1.1).
    """
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    bundle, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = dict(name=name, mime_prefix=prefix)
    ipy_display({prefix + key: data for key, data in bundle.items()}, raw=True, metadata=metadata)


def _inline_png(fig) -> bytes | None:
    """The PNG that a notebook's inline backend would show for ``fig`` (``None`` for an empty figure): IPython's
    ``print_figure`` with its default arguments (the figure's dpi, the tight bounding box)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png")


def color(i: int) -> str:
    """The ``i``-th colour of the book's palette (wrapping around)."""
    return COLORS[i % len(COLORS)]


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Label a log axis with plain numbers (``0.2``, ``1.5``, ``2000``) instead of matplotlib's
    ``2 x 10^0`` on every minor tick, which crowds an axis that spans less than a decade.

    Call it after plotting: it reads the axis' range. Spanning at most one decade, the labels sit
    at 1, 1.5, 2, 3, 5 and 7 times each power of ten; up to two decades at 1, 2 and 5 times;
    wider, at the powers of ten only.
    """
    import matplotlib.ticker as ticker

    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    decades = math.log10(high / low) if low > 0 else math.inf
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    target.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(ticker.NullFormatter())


def _axes(ax, projection=None):
    if ax is not None:
        return ax
    fig = plt.figure()
    return fig.add_subplot(projection=projection)


def grid(
    f: Callable[[torch.Tensor], torch.Tensor],
    xlim: Sequence[float],
    ylim: Sequence[float],
    n: int = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2-D function on an ``n x n`` grid; returns NumPy ``X, Y, Z``.

    ``f`` takes a ``(..., 2)`` tensor (every landscape in :mod:`book.landscapes` does).
    The grid is evaluated in float64 on the CPU: plots need no accelerator.
    """
    xs = torch.linspace(float(xlim[0]), float(xlim[1]), n, dtype=torch.float64)
    ys = torch.linspace(float(ylim[0]), float(ylim[1]), n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        Z = f(torch.stack([X, Y], dim=-1))
    return X.numpy(), Y.numpy(), Z.detach().cpu().numpy()


def _limits(f, xlim, ylim):
    xlim = xlim if xlim is not None else getattr(f, "xlim", (-2.0, 2.0))
    ylim = ylim if ylim is not None else getattr(f, "ylim", (-2.0, 2.0))
    return xlim, ylim


def contour(
    f: Callable[[torch.Tensor], torch.Tensor],
    xlim: Sequence[float] | None = None,
    ylim: Sequence[float] | None = None,
    ax=None,
    levels: int = 30,
    log: bool = False,
    filled: bool = True,
    show_minima: bool = True,
    n: int = 200,
    floor: float = 1e-4,
):
    """Contour plot of a 2-D landscape, with its known minima marked as stars.

    Args:
        f: a landscape (or any function of ``(..., 2)`` tensors).
        xlim, ylim: the window; defaults to the landscape's own.
        ax: Axes to draw on (a new figure when omitted).
        levels: number of contour levels.
        log: space the levels logarithmically (for functions like Rosenbrock whose
            values span many orders of magnitude): the levels run from ``floor`` times
            the range of ``f`` above its minimum up to the range.
        floor: the lowest level with ``log=True``, relative to the range (1e-4 shows
            four decades; Beale's narrow minimum wants 1e-6).
        filled: filled contours (``contourf``) under thin lines.
        show_minima: mark ``f.minima`` with stars.
    """
    ax = _axes(ax)
    xlim, ylim = _limits(f, xlim, ylim)
    X, Y, Z = grid(f, xlim, ylim, n)
    if log:
        shift = Z.min()
        Zp = Z - shift + floor * (Z.max() - shift + 1e-12)
        lv = np.geomspace(Zp.min(), Zp.max(), levels)
        norm = matplotlib.colors.LogNorm(vmin=lv[0], vmax=lv[-1])
        if filled:
            ax.contourf(X, Y, Zp, levels=lv, norm=norm, alpha=0.85)
        ax.contour(X, Y, Zp, levels=lv, colors="k", linewidths=0.3, alpha=0.5)
    else:
        if filled:
            ax.contourf(X, Y, Z, levels=levels, alpha=0.85)
        ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    if show_minima:
        for m in getattr(f, "minima", ()):
            ax.plot(m[0], m[1], marker="*", color="white", markeredgecolor="k", markersize=14, zorder=5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("$x$")
    ax.set_ylabel("$y$")
    ax.grid(False)
    if getattr(f, "name", None):
        ax.set_title(f.name)
    return ax


def surface(
    f: Callable[[torch.Tensor], torch.Tensor],
    xlim: Sequence[float] | None = None,
    ylim: Sequence[float] | None = None,
    ax=None,
    n: int = 80,
    log: bool = False,
    elev: float = 35,
    azim: float = -60,
):
    """3-D surface plot of a 2-D landscape; returns the 3-D Axes.

    ``ax`` must have been created with ``projection="3d"`` if given. With ``log=True``
    the height is ``log10(1 + f - min f)``, which keeps deep valleys visible.
    """
    ax = _axes(ax, projection="3d")
    xlim, ylim = _limits(f, xlim, ylim)
    X, Y, Z = grid(f, xlim, ylim, n)
    if log:
        Z = np.log10(1.0 + Z - Z.min())
    ax.plot_surface(X, Y, Z, cmap="viridis", linewidth=0, antialiased=True, alpha=0.9)
    ax.view_init(elev=elev, azim=azim)
    ax.set_xlabel("$x$")
    ax.set_ylabel("$y$")
    ax.set_zlabel(r"$\log_{10}(1 + f - f_{\min})$" if log else "$f$")
    if getattr(f, "name", None):
        ax.set_title(f.name)
    return ax


def trajectory(
    points,
    ax=None,
    label: str | None = None,
    color: str | None = None,
    marker: str = "o",
    markersize: float = 3,
    every: int = 1,
):
    """Draw an optimizer's path: ``points`` is a ``(steps + 1, 2)`` tensor or array.

    The start is a hollow circle and the last point a filled one. ``every`` thins
    the markers (not the line) for long runs.
    """
    ax = _axes(ax)
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"trajectory expects points of shape (n, 2), got {p.shape}")
    (line,) = ax.plot(p[:, 0], p[:, 1], "-", color=color, label=label, linewidth=1.4)
    c = line.get_color()
    ax.plot(p[::every, 0], p[::every, 1], marker, color=c, markersize=markersize, linestyle="none")
    ax.plot(p[0, 0], p[0, 1], "o", markerfacecolor="white", markeredgecolor=c, markersize=8, zorder=6)
    ax.plot(p[-1, 0], p[-1, 1], "o", color=c, markersize=7, zorder=6)
    return ax


def gradient_field(
    f: Callable[[torch.Tensor], torch.Tensor],
    xlim: Sequence[float] | None = None,
    ylim: Sequence[float] | None = None,
    ax=None,
    n: int = 9,
    normalize: bool = True,
    color: str = "k",
    width: float = 0.009,
):
    """Arrows of the negative gradient (the direction of steepest descent) on an ``n x n`` grid.

    With ``normalize=True`` every arrow has the same length, 60 % of the grid spacing, and
    only shows direction; the colour of the contour plot underneath already shows the size.
    The arrows are dark with a white rim, so they show on every colour of a contour plot.
    ``width`` is the shaft's width as a fraction of the Axes' width.
    """
    ax = _axes(ax)
    xlim, ylim = _limits(f, xlim, ylim)
    xs = torch.linspace(float(xlim[0]), float(xlim[1]), n, dtype=torch.float64)
    ys = torch.linspace(float(ylim[0]), float(ylim[1]), n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    P = torch.stack([X, Y], dim=-1).requires_grad_(True)  # (n, n, 2)
    with torch.enable_grad():
        (G,) = torch.autograd.grad(f(P).sum(), P)
    U, V = -G[..., 0], -G[..., 1]
    style = dict(color=color, edgecolor="white", linewidth=0.6, width=width, headwidth=3.5, headlength=4, zorder=4)
    if normalize:
        norm = torch.sqrt(U**2 + V**2).clamp_min(1e-12)
        U, V = U / norm, V / norm
        length = 0.6 * float(xs[1] - xs[0]) if n > 1 else 1.0
        ax.quiver(X.numpy(), Y.numpy(), U.numpy(), V.numpy(), angles="xy", scale_units="xy", scale=1 / length, **style)
    else:
        ax.quiver(X.numpy(), Y.numpy(), U.numpy(), V.numpy(), **style)
    return ax


def curves(
    ys: Mapping[str, Sequence[float]],
    ax=None,
    x=None,
    logy: bool = False,
    xlabel: str = "step",
    ylabel: str = "",
    title: str | None = None,
):
    """Plot several named curves (loss, error, gradient norm ...) on one Axes.

    Args:
        ys: label -> sequence of values (lists, arrays or 1-D tensors).
        x: shared x values; defaults to 0, 1, 2, ...
        logy: logarithmic y axis (for errors that shrink geometrically).
    """
    ax = _axes(ax)
    for i, (label, values) in enumerate(ys.items()):
        v = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        xv = np.arange(len(v)) if x is None else np.asarray(x)
        ax.plot(xv, v, label=label, color=color(i))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(ys) > 1:
        ax.legend()
    return ax


def to_png(fig) -> bytes:
    """Render a figure to PNG bytes (used for static fallbacks of the explorers)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=STYLE["savefig.dpi"])
    return buf.getvalue()
