"""Small helpers shared by the views: decimating long histories, throttling live updates,
and keeping a FigureWidget's saved state in step with what it shows.

    xs = decimate(steps, 2000)            # at most 2,000 points, evenly spread, last one kept
    throttle = Throttle(min_steps=5, min_seconds=0.25)
    if throttle.due(step): update_the_figure()
    sync_saved_state(fig)                 # when training goes idle: a reload shows the curve
"""
import copy
import time

#: Most points a live line keeps. The browser redraws every point on every update: past a
#: few thousand it slows down and its memory grows with the run instead of staying flat.
MAX_POINTS = 2000


def decimation_stride(n, max_points=MAX_POINTS):
    """The stride that keeps at most `max_points` of `n` values (the last one added on top).

    Strides are powers of two, so the points shown stay the same from one update to the next
    and only change when the stride doubles; the curve does not flicker while it grows."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (first and last point), got {max_points}")
    stride = 1
    # ceil(n / stride) regular points plus possibly the last one must fit
    while -(-n // stride) > max_points - 1:
        stride *= 2
    return stride


def decimate(values, max_points=MAX_POINTS):
    """Every stride-th value from the first, plus the last value, as a list: at most
    `max_points` values. Costs O(max_points), not O(len(values)), for a list."""
    n = len(values)
    if n <= max_points:
        return list(values)
    stride = decimation_stride(n, max_points)
    kept = list(values[::stride])
    if (n - 1) % stride:
        kept.append(values[n - 1])   # the newest value: what a live view must show
    return kept


class Throttle:
    """Says when a live view should redraw: at least `min_steps` new steps AND at least
    `min_seconds` since the last redraw. Redrawing every step costs more than the step itself
    for a tiny model (and floods the browser with messages); four times a second looks live.

    `clock` is injectable so tests can drive time by hand."""

    def __init__(self, min_steps=1, min_seconds=0.25, clock=time.monotonic):
        if min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {min_steps}")
        if min_seconds < 0:
            raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
        self.min_steps, self.min_seconds, self.clock = min_steps, min_seconds, clock
        self.reset()

    def reset(self):
        self._last_step = None
        self._last_time = None

    def due(self, step):
        """True (and remember this moment) when `step` is far enough from the last redraw."""
        now = self.clock()
        if self._last_step is not None:
            if abs(step - self._last_step) < self.min_steps:
                return False
            if now - self._last_time < self.min_seconds:
                return False
        self._last_step, self._last_time = step, now
        return True

    def mark(self, step):
        """Record a redraw made for another reason (e.g. the final one when training stops)."""
        self._last_step, self._last_time = step, self.clock()


def sync_saved_state(fig):
    """Copy what `fig` (a plotly FigureWidget) shows now into its saved widget state.

    Why: updates made after a FigureWidget is displayed travel to the browser as edits, but the
    widget's own stored state (what a page reload, Voila or a saved notebook rebuilds the
    figure from) keeps the figure as it was first shown, e.g. an empty loss curve. plotly keeps
    that state in two private traits; assigning deep copies of the live data and layout to them
    updates it. This is the only place the package touches them. Returns True when it synced,
    False when this plotly has no such traits (nothing is changed then)."""
    if not (hasattr(fig, "_widget_data") and hasattr(fig, "_widget_layout")):
        return False
    # deep copies: the traits must not share lists/arrays that the next update mutates
    fig._widget_data = copy.deepcopy(fig._data)
    fig._widget_layout = copy.deepcopy(fig._layout)
    return True


def static_copy(fig):
    """A plain go.Figure with the same data and layout: for static renderings (no widgets)."""
    import plotly.graph_objects as go

    return go.Figure(fig.to_dict())
