"""Decimation: a long history as at most MAX_POINTS points, for a live line plot.

    xs = decimate(steps, 2000)            # at most 2,000 points, evenly spread, last one kept
    label_positions(1024, 32)             # [0, 32, 64, ...]: which of 1,024 axis labels to show
"""

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


def label_positions(n, max_labels):
    """Positions 0, s, 2s, ... (s a power of two) of n labels: at most `max_labels` of them,
    no two closer than s. For axis labels, where the last one is not worth a collision."""
    if max_labels < 1:
        raise ValueError(f"max_labels must be at least 1, got {max_labels}")
    stride = 1
    while -(-n // stride) > max_labels:
        stride *= 2
    return list(range(0, n, stride))
