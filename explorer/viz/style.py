"""Projector mode: everything larger, for a lecture hall.

    from explorer.viz.style import projector
    projector()          # run before making the views; display its result to restyle widgets

Plotly figures made afterwards use a larger font (a plotly template, set as the default);
the returned HTML widget carries CSS (projector.css, sized for the scale) that enlarges widget
labels, buttons and text.
"""
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "explorer_projector"
# sized by the custom properties --explorer-font-size and --explorer-button-height
PROJECTOR_CSS = (Path(__file__).parent / "projector.css").read_text(encoding="utf-8")


class ProjectorStyle(widgets.HTML):
    """The CSS of projector mode as a widget (a live page applies it while it is shown). Where
    widgets do not run (a saved notebook on GitHub or nbviewer) it shows one line saying what
    it is, not its CSS."""

    scale = 1.5

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        summary = f"Projector mode: widgets and figures {self.scale:g}x larger."
        bundle["text/plain"] = summary
        bundle["text/html"] = f"<p><i>{summary}</i></p>"
        return bundle


def projector(scale: float = 1.5) -> ProjectorStyle:
    """Make later plotly figures and all widgets `scale` times larger; returns the style widget."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    base = 12 * scale
    pio.templates[TEMPLATE] = go.layout.Template(layout=dict(
        font=dict(size=base), title=dict(font=dict(size=base * 1.2)),
        hoverlabel=dict(font=dict(size=base))))
    pio.templates.default = f"plotly+{TEMPLATE}"
    sizes = (f":root {{--explorer-font-size: {round(13 * scale)}px; "
             f"--explorer-button-height: {round(28 * scale)}px;}}")
    css = f"<style>{sizes}\n{PROJECTOR_CSS}</style>"
    style = ProjectorStyle(css, layout=widgets.Layout(height="0px"))
    style.scale = scale
    return style
