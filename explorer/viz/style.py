"""Projector mode: everything larger, for a lecture hall.

    from explorer.viz.style import projector
    projector()          # run before making the views; display its result to restyle widgets

Plotly figures made afterwards use a larger font (a plotly template, set as the default);
the returned HTML widget carries CSS that enlarges widget labels, buttons and text.
"""
import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "explorer_projector"


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


def projector(scale=1.5):
    """Make later plotly figures and all widgets `scale` times larger; returns the style widget."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    base = 12 * scale
    pio.templates[TEMPLATE] = go.layout.Template(layout=dict(
        font=dict(size=base), title=dict(font=dict(size=base * 1.2)),
        hoverlabel=dict(font=dict(size=base))))
    pio.templates.default = f"plotly+{TEMPLATE}"
    px = round(13 * scale)
    css = (f"<style>.widget-label, .widget-button, .widget-html-content, .widget-readout, "
           f".widget-inline-hbox, .widget-text input, .widget-dropdown select "
           f"{{font-size: {px}px !important; line-height: 1.3;}} "
           # a view's fixed-width buttons (the dashboard's 88 px) grow to fit the larger label
           f".widget-button {{height: {round(28 * scale)}px !important; "
           f"min-width: max-content !important;}} "
           f".jp-RenderedHTMLCommon, .jp-OutputArea-output pre {{font-size: {px}px;}}</style>")
    style = ProjectorStyle(css, layout=widgets.Layout(height="0px"))
    style.scale = scale
    return style
