"""What a view shows where widgets do not run: GitHub, nbviewer without JavaScript, VS Code
without a widget renderer, a notebook converted to text. A view's mime bundle carries its live
widget plus a static HTML rendering and a plain-text summary; each renderer picks the richest
one it supports, so a saved notebook never shows an empty cell or a widget's repr.

    def _repr_mimebundle_(self, **kwargs):
        return view_bundle(self.widget, self._static_html(), "Gradient flow: 200 steps", **kwargs)
"""
import html
import re

LIVE_HINT = "run the notebook in JupyterLab, Notebook 7 or VS Code to use it live"
# tags that separate words (a line break, a paragraph, a table cell); other tags just vanish
_BREAKS = re.compile(r"<br\s*/?>|</?(?:p|div|tr|td|th|li)\b[^>]*>", re.IGNORECASE)


def plain_text(fragment):
    """An HTML fragment as one line of text: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", _BREAKS.sub(" ", fragment))).split())


def view_bundle(widget, static_html, summary, **kwargs):
    """The mime bundle of a view: `widget` live; `static_html` for renderers without widgets;
    as plain text, `summary` (what the view is and what it shows now) and how to see it live."""
    bundle = widget._repr_mimebundle_(**kwargs) or {}
    bundle["text/html"] = static_html
    bundle["text/plain"] = f"{summary}\n({LIVE_HINT})"
    return bundle
