"""Edit -> recompile -> first retrain step, as a student in the kernel lab sees it.

Each round "edits" a small kernel (new source text, as re-running a notebook cell gives),
then calls KernelLab.retrain, and reports the seconds from that call to the first
training step's loss: the check (a sandboxed bounds-checked build on every test case and
on the model's own shapes, then the real build compared with the reference) plus the
first step. The lab's reference run is trained before the first round, as the lab view
does when it opens. Run:  python benchmarks/lab_latency.py [rounds]
(re-started without the OpenBLAS pins when they are set).
"""
import statistics
import sys
import time

from explorer import KernelLab
from explorer.lab.bench.blas import blas_pools, describe, rerun_unpinned

SOURCE = '''
import numba, numpy as np

@numba.njit
def gelu_backward(dinp, inp, dout):
    d, x, g = dinp.reshape(-1), inp.reshape(-1), dout.reshape(-1)
    for i in range(x.size):
        t = np.tanh(0.7978845608028654 * (x[i] + 0.044715 * x[i] ** 3))
        slope = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x[i] * x[i])
        d[i] = (0.5 * (1.0 + t) + 0.5 * x[i] * (1.0 - t * t) * slope) * g[i] * {one}
'''


def main(rounds=5):
    code = rerun_unpinned()          # time with OpenBLAS as a user's machine picks it
    if code is not None:
        return code
    print(f"NumPy's BLAS: {describe(blas_pools())}")
    lab = KernelLab("reverse-tiny", steps=1)
    t0 = time.perf_counter()
    lab.reference()
    print(f"reference run (once): {time.perf_counter() - t0:.2f} s")
    latencies = []
    for i in range(rounds):
        namespace = {}
        exec(SOURCE.format(one=f"{1.0 + i * 1e-9!r}"), namespace)   # a new edit each round
        run = lab.retrain("gelu_backward", namespace["gelu_backward"], steps=1)
        assert run.status == "done", str(run.report)
        latencies.append(run.first_step_s)
        print(f"round {i + 1}: edit -> first retrain step {run.first_step_s:.2f} s")
    print(f"first round {latencies[0]:.2f} s (captures the model's calls once); "
          f"median of the rest {statistics.median(latencies[1:] or latencies):.2f} s")


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
