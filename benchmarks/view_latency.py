"""How fast the attention explorer answers at GPT-2 small's shape, and what it holds and sends.

GPT-2 124M's shapes (12 layers x 12 heads, n_embd 768, vocab 50257) with random weights, one
prompt of 1,024 random tokens. It opens an AttentionExplorer on it (one forward and the pooled
grid of all 144 heads), then times, in interleaved rounds, what a user does:

    layer     move the layer slider (a new layer, the same head)
    head      move the head slider
    click     click a head in the 12 x 12 grid
    unpooled  the same head change, but sending the full 1,024 x 1,024 map (the baseline: what
              the view sent before pooling)

Each time is from the change to the callback's return, server side: the map computed, pooled
and handed to the widget's comm (a stand-in that measures each message instead of sending it).
Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/view_latency.py [rounds]
"""
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

from explorer import GPT, GPTConfig
from explorer.viz import AttentionExplorer, StepThrough

T = 1024


def rss_mb():
    """Resident set size now (MB), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MeasuringComm:
    """Takes the place of a widget's comm: keeps the size of every message (JSON + buffers)."""

    def __init__(self, comm):
        self.comm_id, self.kernel = comm.comm_id, True    # a kernel: ipywidgets sends
        self.sizes = []

    def send(self, data=None, metadata=None, buffers=None):
        size = len(json.dumps(data, default=str))
        size += sum(memoryview(b).nbytes for b in (buffers or ()))
        self.sizes.append(size)

    def close(self, *args, **kwargs):
        pass

    def on_msg(self, callback):
        pass

    def take(self):
        total, self.sizes = sum(self.sizes), []
        return total


def widget_state_bytes(widget):
    """The bytes of the widget's state as a saved notebook stores it (JSON and buffers)."""
    from ipywidgets.widgets.widget import _remove_buffers
    state, _, buffers = _remove_buffers(widget.get_state())
    return len(json.dumps(state)) + sum(memoryview(b).nbytes for b in buffers)


def click(view, layer, head):
    g = view._grid_cells()
    x, y = head * (g + 1) + g // 2, layer * (g + 1) + g // 2
    view.grid._handler_js2py_pointsCallback({"new": {
        "event_type": "plotly_click",
        "points": {"xs": [x], "ys": [y], "point_indexes": [[y, x]], "trace_indexes": [0]}}})


def blas_line():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return ", ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} "
                     f"x{p.get('num_threads')}" for p in threadpool_info()
                     if p.get("user_api") == "blas")


def main(rounds=9):
    print(f"load average before: {os.getloadavg()}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")
    config = GPTConfig(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=T)
    model = GPT(config, seed=0)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=T)
    model.forward(ids[None, :1])          # compile / load the kernels before timing anything
    print(f"BLAS: {blas_line()}")
    base = rss_mb()
    print(f"model built: RSS {base:.0f} MB")

    t0 = time.perf_counter()
    view = AttentionExplorer(model, prompt=ids)
    opened = time.perf_counter() - t0
    held = view.history.values[-1].record.nbytes + view.history.values[-1].grid().nbytes
    print(f"open (forward at T={T} + pooled grid of 144 heads): {opened:.2f} s; RSS {rss_mb():.0f} MB "
          f"(peak so far {peak_rss_mb():.0f} MB); the view's snapshot holds {held / 2**20:.1f} MB")

    snapshot = view.history.values[-1]
    snapshot._grid = None
    t0 = time.perf_counter()
    snapshot.grid()
    print(f"  of which the pooled grid (12 layers' maps computed, pooled, dropped): "
          f"{time.perf_counter() - t0:.2f} s")

    comms = {name: MeasuringComm(fig.comm) for name, fig in
             (("selected", view.selected), ("grid", view.grid))}
    view.selected.comm, view.grid.comm = comms["selected"], comms["grid"]

    def unpooled():
        head = (view.head.value + 1) % 12
        full = view.head_attention(view.layer.value, head)
        with view.selected.batch_update():
            view.selected.data[0].z = full
        view.head.unobserve_all()     # only its value moves: the callback must not redraw
        view.head.value = head
        view.head.observe(view._on_head_change, names="value")

    actions = {
        "layer": lambda: setattr(view.layer, "value", (view.layer.value + 5) % 12),
        "head": lambda: setattr(view.head, "value", (view.head.value + 7) % 12),
        "click": lambda: click(view, (view.layer.value + 3) % 12, (view.head.value + 1) % 12),
        "unpooled": unpooled,
    }
    times = {name: [] for name in actions}
    sent = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():     # interleaved: one of each per round
            comms["selected"].take(), comms["grid"].take()
            t0 = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - t0)
            sent[name].append(comms["selected"].take() + comms["grid"].take())
    for name in actions:
        ms = np.array(times[name]) * 1e3
        print(f"{name:9s} median {statistics.median(ms):6.1f} ms  (min {ms.min():6.1f}, "
              f"max {ms.max():6.1f}; {rounds} rounds)  sent {statistics.median(sent[name]) / 1e3:8.1f} kB")
    print(f"ratio unpooled / head: {statistics.median(times['unpooled']) / statistics.median(times['head']):.1f}x")

    view._draw_selected()                 # the last round left the unpooled baseline shown
    view.sync_figures()
    state = {name: widget_state_bytes(fig) for name, fig in (("selected", view.selected),
                                                              ("grid", view.grid))}
    print(f"saved widget state: selected {state['selected'] / 1e3:.0f} kB, grid "
          f"{state['grid'] / 1e3:.0f} kB; static HTML {len(view.static_html()) / 1e3:.0f} kB")
    # the step-through of the same forward (the explorer ran it on the model itself)
    t0 = time.perf_counter()
    steps = StepThrough(model)
    captured = time.perf_counter() - t0
    slices = {id(t.slice2d): t.slice2d.nbytes for op in steps.ops for t in op.tensors
              if t.slice2d is not None}
    print(f"StepThrough of the {T}-token forward: capture {captured:.2f} s, {len(steps.ops)} ops, "
          f"slices held {sum(slices.values()) / 2**20:.0f} MB")
    steps.fig.comm = comm = MeasuringComm(steps.fig.comm)
    moves, sizes = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        steps.move(+7 if steps.select.value + 7 < len(steps.ops) else -steps.select.value)
        moves.append(time.perf_counter() - t0)
        sizes.append(comm.take())
    print(f"next op    median {statistics.median(moves) * 1e3:6.1f} ms  (max {max(moves) * 1e3:6.1f}; "
          f"{rounds} moves)  sent {statistics.median(sizes) / 1e3:8.1f} kB")
    print(f"RSS at the end {rss_mb():.0f} MB, peak {peak_rss_mb():.0f} MB "
          f"(the model alone: {base:.0f} MB)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
