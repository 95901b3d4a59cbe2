"""Tests of book.plotting (helpers draw and return Axes) and book.widgets (explorers)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from book import plotting  # noqa: E402
from book.landscapes import himmelblau, ill_conditioned_quadratic, rosenbrock  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_use_style_and_colors():
    plotting.use_style()
    assert matplotlib.rcParams["figure.constrained_layout.use"] is True
    assert plotting.color(0) == plotting.COLORS[0]
    assert plotting.color(len(plotting.COLORS) + 2) == plotting.COLORS[2]


def test_grid_evaluates_the_function():
    X, Y, Z = plotting.grid(rosenbrock, (-2, 2), (-1, 3), n=11)
    assert X.shape == Y.shape == Z.shape == (11, 11)
    assert X[0, 0] == -2 and X[0, -1] == 2 and Y[0, 0] == -1 and Y[-1, 0] == 3
    expected = (1 - X) ** 2 + 100 * (Y - X**2) ** 2
    np.testing.assert_allclose(Z, expected, rtol=1e-12)


@pytest.mark.parametrize("log", [False, True])
def test_contour_draws_and_marks_minima(log):
    ax = plotting.contour(himmelblau, log=log, n=40)
    assert isinstance(ax, Axes)
    assert len(ax.collections) >= 2  # filled contours and contour lines
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert len(stars) == len(himmelblau.minima) == 4
    assert ax.get_xlim() == himmelblau.xlim and ax.get_title() == "Himmelblau"


def test_contour_on_given_axes_and_window():
    fig, ax = plt.subplots()
    out = plotting.contour(rosenbrock, xlim=(0, 2), ylim=(0, 2), ax=ax, filled=False, show_minima=False, n=30)
    assert out is ax
    assert len(ax.collections) == 1 and len(ax.lines) == 0
    assert ax.get_xlim() == (0, 2)


def test_surface_returns_3d_axes():
    ax = plotting.surface(rosenbrock, log=True, n=20)
    assert ax.name == "3d"
    assert len(ax.collections) == 1
    assert "log" in ax.get_zlabel()


def test_trajectory_draws_path_and_rejects_bad_shapes():
    pts = torch.tensor([[0.0, 0.0], [0.5, 0.2], [1.0, 1.0]])
    ax = plotting.trajectory(pts, label="path")
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 4  # path, markers, start, end
    np.testing.assert_allclose(ax.lines[0].get_xydata(), pts.numpy())
    plotting.trajectory(np.array([[0.0, 1.0], [2.0, 3.0]]), ax=ax, color="red")
    assert len(ax.lines) == 8
    with pytest.raises(ValueError, match=r"shape \(n, 2\), got \(3, 3\)"):
        plotting.trajectory(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"shape \(n, 2\), got \(4,\)"):
        plotting.trajectory(np.zeros(4))


@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_field_points_downhill(normalize):
    f = ill_conditioned_quadratic(10.0)  # f = (10 x^2 + y^2) / 2, gradient (10x, y)
    ax = plotting.gradient_field(f, n=5, normalize=normalize)
    (q,) = ax.collections
    U, V = np.asarray(q.U).ravel(), np.asarray(q.V).ravel()
    X, Y = q.X.ravel(), q.Y.ravel()
    gx, gy = -10 * X, -Y
    if normalize:
        norm = np.hypot(gx, gy)
        keep = norm > 0
        gx, gy = gx[keep] / norm[keep], gy[keep] / norm[keep]
        U, V = U[keep], V[keep]
    np.testing.assert_allclose(U, gx, atol=1e-12)
    np.testing.assert_allclose(V, gy, atol=1e-12)


def test_curves_plots_every_series():
    ax = plotting.curves({"a": [1, 0.1, 0.01], "b": torch.tensor([1.0, 0.5, 0.25])}, logy=True, ylabel="loss", title="t")
    assert len(ax.lines) == 2
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss" and ax.get_title() == "t"
    assert ax.get_legend() is not None
    one = plotting.curves({"only": [3, 2, 1]}, x=[10, 20, 30])
    np.testing.assert_array_equal(one.lines[0].get_xdata(), [10, 20, 30])
    assert one.get_legend() is None


def test_to_png_returns_png_bytes():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    data = plotting.to_png(fig)
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


# ---------------------------------------------------------------------------
# book.widgets


def _draw(fig, a, b):
    ax = fig.add_subplot()
    ax.plot([0, 1], [a, b])
    ax.set_ylim(-1, 1)


def _sliders():
    W = pytest.importorskip("ipywidgets")
    return {
        "a": W.FloatSlider(value=0.0, min=-1, max=1, continuous_update=False),
        "b": W.FloatSlider(value=0.5, min=-1, max=1, continuous_update=False),
    }


def test_explorer_mimebundle_has_widget_and_png_fallback():
    from book.widgets import Explorer, explorer

    ex = explorer(_draw, _sliders(), figsize=(3, 2), title="demo")
    assert isinstance(ex, Explorer)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "image/png" in bundle and "text/plain" in bundle
    import base64

    assert base64.b64decode(bundle["image/png"]).startswith(PNG_MAGIC)
    assert "a=0.0" in bundle["text/plain"] and "b=0.5" in bundle["text/plain"]


def test_explorer_redraws_when_a_control_changes():
    from book.widgets import explorer

    controls = _sliders()
    before_figs = plt.get_fignums()
    ex = explorer(_draw, controls, figsize=(3, 2))
    first = bytes(ex.image.value)
    assert first.startswith(PNG_MAGIC)
    controls["b"].value = -0.8
    assert bytes(ex.image.value) != first
    assert ex.values() == {"a": 0.0, "b": -0.8}
    fig = ex.figure(a=0.3)
    assert isinstance(fig, Figure)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [0.3, -0.8])
    assert plt.get_fignums() == before_figs  # explorer figures never go through pyplot


def test_explorer_rejects_bad_controls_and_draw():
    from book.widgets import explorer

    with pytest.raises(TypeError, match="control 'c' has no .value"):
        explorer(_draw, {"c": object()})
    with pytest.raises(TypeError, match="draw must be a function"):
        explorer("not callable", _sliders())


def test_explorer_is_no_wider_than_the_page():
    from book.widgets import explorer

    with pytest.raises(ValueError, match="at most 7.0 inches wide"):
        explorer(_draw, _sliders(), figsize=(11, 4))
    ex = explorer(_draw, _sliders())  # the default size is the page's width
    assert ex.figure().get_size_inches()[0] == plotting.PAGE_WIDTH


def test_subplots_are_the_page_wide_and_refuse_wider():
    fig, axes = plotting.subplots(2, 2, sharex=True)
    w, h = fig.get_size_inches()
    assert (w, h) == (plotting.PAGE_WIDTH, 2 * 2.9) and axes.shape == (2, 2)
    fig, ax = plotting.subplots(height=2.5, width=5)
    assert tuple(fig.get_size_inches()) == (5, 2.5)
    with pytest.raises(ValueError, match="the page's width"):
        plotting.subplots(1, 2, width=11)
    with pytest.raises(ValueError, match="height must be positive"):
        plotting.subplots(height=0)


def test_the_style_draws_figures_at_the_size_the_page_shows_them():
    plotting.use_style()
    fig = plt.figure()
    png = plotting.to_png(fig)
    width = int.from_bytes(png[16:20], "big")  # the PNG header's IHDR width
    assert width == round(plotting.PAGE_WIDTH * plotting.DPI) == 700
    assert matplotlib.rcParams["xtick.labelsize"] >= 9 and matplotlib.rcParams["legend.fontsize"] >= 8


def test_show_records_the_figure_for_the_book_and_displays_it(monkeypatch):
    import IPython.display
    from IPython.core.pylabtools import print_figure

    shown, glued = [], []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plotting, "glue", lambda name, obj, display=True: glued.append((name, obj, display)))
    fig, ax = plotting.subplots()
    ax.plot([0, 1], [1, 0])
    expected = print_figure(fig, "png")  # what the notebook's inline backend shows for a figure
    plotting.show(fig, "fig-99-demo")
    assert len(shown) == 1 and shown[0].data == expected  # shown once, rendered once
    assert glued == [("fig-99-demo", shown[0], False)]    # the same bytes recorded for the book
    assert fig.number not in plt.get_fignums()  # closed: pyplot will not draw it a second time

    from book.widgets import explorer

    ex = explorer(_draw, _sliders(), figsize=(3, 2))
    plotting.show(ex, "fig-99-explorer")
    assert shown[-1] is ex and glued[-1][0] == "fig-99-explorer"
    assert glued[-1][1].data.startswith(PNG_MAGIC)  # the book gets the first drawing as a PNG
    with pytest.raises(ValueError, match="fig-06-noise-floor"):
        plotting.show(fig, "Noise floor")
    with pytest.raises(TypeError, match="a matplotlib Figure or an explorer"):
        plotting.show("not a figure", "fig-99-x")


@pytest.mark.parametrize("display", [False, True])
@pytest.mark.parametrize("value", [0.125, "text", "figure"])
def test_glue_records_what_myst_nb_glue_records(monkeypatch, value, display):
    """book.plotting.glue must write the very output the book's build reads: myst-nb's glue is the reference."""
    pytest.importorskip("myst_nb")
    import myst_nb.ext.glue as reference
    from IPython.display import Image

    if value == "figure":
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        value = Image(data=plotting.to_png(fig), format="png")
        plt.close(fig)
    outputs = []

    def record(obj, raw=False, metadata=None):
        outputs.append((obj, raw, metadata))

    monkeypatch.setattr(reference, "ipy_display", record)
    reference.glue("ch99-value", value, display)
    monkeypatch.setattr("IPython.display.display", record)
    plotting.glue("ch99-value", value, display)
    assert len(outputs) == 2 and outputs[0] == outputs[1]
    bundle, raw, metadata = outputs[1]
    assert raw and metadata["scrapbook"]["name"] == "ch99-value"
    assert all(key.startswith(plotting.GLUE_PREFIX) != display for key in bundle)


def test_plain_log_ticks_label_a_narrow_log_axis_with_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1.8, 2.4])
    ax.set_yscale("log")
    plotting.plain_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert "2" in labels and not any("10^" in s or "times" in s for s in labels)
