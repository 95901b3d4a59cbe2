"""Interactive explorers: sliders and menus that redraw a figure, with a static fallback.

An explorer is a drawing function plus named controls::

    import ipywidgets as W
    from book.widgets import explorer

    def draw(fig, lr, steps):
        ax = fig.add_subplot()
        ...                               # draw the picture for these values

    explorer(draw, {"lr": W.FloatSlider(value=0.1, min=0.01, max=1.0, step=0.01),
                    "steps": W.IntSlider(value=20, min=1, max=100)})

In a live notebook the figure redraws whenever a control changes. The figure is
rendered to PNG and shown in an ``ipywidgets.Image``, so nothing is printed into the
cell's output while it runs; the cell's output carries a PNG of the first drawing as
well as the widget. Where no kernel is running (the rendered book, a notebook viewer,
a saved notebook reopened) that PNG is shown instead of the live controls.
"""

from __future__ import annotations

import base64
from typing import Callable, Mapping

from matplotlib.figure import Figure

from book.plotting import PAGE_WIDTH, STYLE, to_png

__all__ = ["Explorer", "explorer"]


class Explorer:
    """Controls that redraw a matplotlib figure. Build one with :func:`explorer`.

    Attributes:
        controls: the name -> widget mapping; each widget's ``value`` is passed to
            ``draw`` under that name.
        widget: the ipywidgets box (controls above the picture).
    """

    def __init__(
        self,
        draw: Callable[..., None],
        controls: Mapping[str, object],
        figsize: tuple[float, float] | None = None,
        title: str | None = None,
    ):
        import ipywidgets as W  # imported here so `import book.widgets` stays cheap

        if not callable(draw):
            raise TypeError("draw must be a function draw(fig, **values)")
        for name, control in controls.items():
            if not hasattr(control, "value"):
                raise TypeError(f"control {name!r} has no .value; pass an ipywidgets control")
        self.draw = draw
        self.controls = dict(controls)
        self.figsize = figsize or STYLE["figure.figsize"]
        if not 0 < self.figsize[0] <= PAGE_WIDTH:
            raise ValueError(f"an explorer's figure is at most {PAGE_WIDTH} inches wide (the page's width), "
                             f"got figsize={tuple(figsize)}")
        self.image = W.Image(format="png")
        rows = []
        items = list(self.controls.values())
        for i in range(0, len(items), 2):  # two controls per row
            rows.append(W.HBox(items[i : i + 2]))
        header = [W.HTML(f"<b>{title}</b>")] if title else []
        self.widget = W.VBox(header + rows + [self.image])
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    def values(self) -> dict:
        """The current value of every control."""
        return {name: control.value for name, control in self.controls.items()}

    def figure(self, **overrides) -> Figure:
        """Draw a fresh figure for the current values (or ``overrides``) and return it.

        The figure is not registered with pyplot, so it never shows up twice.
        """
        import matplotlib

        values = self.values() | overrides
        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=self.figsize, layout="constrained")
            self.draw(fig, **values)
        return fig

    def png(self, **overrides) -> bytes:
        """The picture for the current values (or ``overrides``) as PNG bytes."""
        return to_png(self.figure(**overrides))

    def update(self, *_) -> None:
        """Redraw (called whenever a control changes)."""
        self.image.value = self.png()

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        data = dict(bundle[0] if isinstance(bundle, tuple) else bundle)
        # The static fallback: what a reader without a kernel sees.
        data["image/png"] = base64.b64encode(bytes(self.image.value)).decode("ascii")
        data["text/plain"] = (
            f"<explorer: {', '.join(f'{k}={v!r}' for k, v in self.values().items())}; "
            "run the notebook to use the controls>"
        )
        return data


def explorer(
    draw: Callable[..., None],
    controls: Mapping[str, object],
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
) -> Explorer:
    """Make an interactive explorer; display it by making it the last line of a cell.

    Args:
        draw: ``draw(fig, **values)`` draws onto the empty matplotlib ``Figure`` it is
            given, for the current value of each control.
        controls: name -> ipywidgets control (``FloatSlider``, ``Dropdown``, ...). Use
            ``continuous_update=False`` on sliders whose drawing takes more than a
            moment.
        figsize: the figure size in inches; the book's default otherwise. The width is at
            most ``book.plotting.PAGE_WIDTH``, so the picture is not shrunk on the page.
        title: a bold line above the controls.

    Returns:
        An :class:`Explorer`. Its ``figure()`` gives the current picture as a plain
        figure, so the same drawing code also works in a script.
    """
    return Explorer(draw, controls, figsize=figsize, title=title)
