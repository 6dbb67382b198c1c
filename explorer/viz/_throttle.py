"""Throttle: when a live view should redraw, so that redraws stay a small share of training.

    throttle = Throttle(min_steps=5, min_seconds=0.25, budget=0.02)
    if throttle.due(step): update_the_figure(); throttle.mark(step, seconds_it_took)
"""
import time


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
