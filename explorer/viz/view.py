"""View: what every view shares. How it shows (live, and where widgets do not run), how it
listens to a trainer's events, and how it closes.

    class LossView(View):
        def __init__(self, trainer):
            super().__init__()
            self.figure = FigureWidget(...)
            self.widget = widgets.VBox([widgets.HTML("<b>Loss</b>"), self.figure])   # shown live
            self._subscribe(trainer, "step", self._on_step)           # undone by close()
        def figures(self):
            return [self.figure]
        def summary(self):
            return "Loss: 200 steps"           # one line of plain text: what it shows now
        def static_html(self):
            return "<p>...</p>"                # for renderers without widgets

A view's mime bundle carries its live widget plus that static HTML and the summary, each
renderer picking the richest one it supports: a saved notebook on GitHub, nbviewer without
JavaScript, VS Code without a widget renderer or a notebook converted to text shows the
static copy, never an empty cell or a widget's repr.
"""
import abc
import html
import re

import ipywidgets as widgets
import plotly.graph_objects as go

LIVE_HINT = "run the notebook in JupyterLab, Notebook 7 or VS Code to use it live"
# tags that separate words (a line break, a paragraph, a table cell); other tags just vanish
_BREAKS = re.compile(r"<br\s*/?>|</?(?:p|div|tr|td|th|li)\b[^>]*>", re.IGNORECASE)


def plain_text(fragment):
    """An HTML fragment as one line of text: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", _BREAKS.sub(" ", fragment))).split())


def static_copy(fig):
    """A plain go.Figure with the same data and layout: for static renderings (no widgets)."""
    return go.Figure(fig.to_dict())


def widget_tree(widget):
    """`widget` and every widget it holds (children, layout, style, ...), each once."""
    seen, stack = {}, [widget]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        for name in w.keys:
            value = getattr(w, name, None)
            values = value if isinstance(value, (tuple, list)) else (value,)
            stack.extend(v for v in values if isinstance(v, widgets.Widget))
    return list(seen.values())


class View(abc.ABC):
    """Base of every view. A subclass sets `self.widget` (what it shows live) and defines
    `summary()` and `static_html()`; one with plotly figures lists them in `figures()`.
    It subscribes to events through `_subscribe` (or registers its own undo with `_on_detach`),
    so that `detach()` and `close()` can undo every subscription."""

    widget = None

    def __init__(self):
        self._undo = []     # (function, args): what detach() calls, newest first

    # ------------------------------------------------------------------ what it shows
    def figures(self):
        """Its plotly FigureWidgets, main one first."""
        return []

    @abc.abstractmethod
    def summary(self):
        """One line of plain text: what the view is and what it shows now."""

    @abc.abstractmethod
    def static_html(self):
        """What it shows where widgets do not run: plain HTML, no JavaScript."""

    def sync_figures(self):
        """Make each figure's saved widget state what it shows now: a page reload, Voila or a
        saved notebook redraws the figures from that state (see _figure.sync_saved_state)."""
        for fig in self.figures():
            fig.sync_state()

    def static_figures(self):
        """Plain go.Figure copies of its figures (no widget manager needed to show them)."""
        return [static_copy(fig) for fig in self.figures()]

    def static_figure(self):
        """The main figure as a plain go.Figure."""
        figures = self.figures()
        if not figures:
            raise ValueError(f"{type(self).__name__} has no figure to copy")
        return static_copy(figures[0])

    def _repr_mimebundle_(self, **kwargs):
        """The live widget (while the view is open), its static HTML for renderers without
        widgets, and as plain text its summary and how to see it live."""
        self.sync_figures()   # the browser draws the figures as they are now
        # ipywidgets drops a closed widget's _repr_mimebundle_: a closed view shows its copy
        live = getattr(self.widget, "_repr_mimebundle_", None)
        bundle = (live(**kwargs) or {}) if live is not None else {}
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = f"{self.summary()}\n({LIVE_HINT})"
        return bundle

    # ------------------------------------------------------------------ events
    def _subscribe(self, source, event, callback):
        """source.on(event, callback) (a Trainer or BackgroundTrainer), undone by detach()."""
        source.on(event, callback)
        self._on_detach(source.off, event, callback)

    def _on_detach(self, function, *args):
        """Call function(*args) when the view detaches (e.g. remove a listener it added)."""
        self._undo.append((function, args))

    def detach(self):
        """Stop listening to every event; the widgets stay as they are (e.g. a replaced view's
        last state). Training goes on. Idempotent."""
        while self._undo:
            function, args = self._undo.pop()
            try:
                function(*args)
            except ValueError:   # list.remove: the listener was removed already
                pass

    def close(self):
        """Detach from every event, then close every widget of the view: its live output
        disappears from the page (a display afterwards shows the static copy). Training goes
        on. Idempotent."""
        self.detach()
        if self.widget is not None:
            for w in widget_tree(self.widget):
                w.close()
