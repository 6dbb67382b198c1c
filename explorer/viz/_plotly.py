"""Small helpers shared by the views: decimating long histories, throttling live updates,
and keeping a FigureWidget's saved state in step with what it shows.

    xs = decimate(steps, 2000)            # at most 2,000 points, evenly spread, last one kept
    throttle = Throttle(min_steps=5, min_seconds=0.25, budget=0.02)
    if throttle.due(step): update_the_figure(); throttle.mark(step, seconds_it_took)
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

    budget: the largest fraction of the time the guarded work may take. After work that took
    `cost` seconds (see `mark`), the next is due no sooner than cost / budget seconds later,
    so a slow redraw (a loaded machine, a long sample) spaces itself out instead of eating
    into training. `clock` is injectable so tests can drive time by hand."""

    def __init__(self, min_steps=1, min_seconds=0.25, budget=None, clock=time.monotonic):
        if min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {min_steps}")
        if min_seconds < 0:
            raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
        if budget is not None and not 0 < budget <= 1:
            raise ValueError(f"budget must be a fraction in (0, 1], got {budget}")
        self.min_steps, self.min_seconds, self.budget, self.clock = (
            min_steps, min_seconds, budget, clock)
        self.reset()

    def reset(self):
        self._last_step = None
        self._last_time = None
        self._last_cost = 0.0

    def wait_seconds(self):
        """Seconds that must pass after the last redraw."""
        spacing = self._last_cost / self.budget if self.budget else 0.0
        return max(self.min_seconds, spacing)

    def due(self, step):
        """True when `step` is far enough from the last redraw, in steps and in seconds.
        The caller then does the work and calls mark(step, cost)."""
        if self._last_step is None:
            return True
        if abs(step - self._last_step) < self.min_steps:
            return False
        return self.clock() - self._last_time >= self.wait_seconds()

    def mark(self, step, cost=0.0):
        """Record work done for `step` that took `cost` seconds (by the same clock)."""
        self._last_step, self._last_time, self._last_cost = step, self.clock(), cost


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
