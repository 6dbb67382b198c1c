"""Reference solutions of 05_kernel_lab.ipynb, for instructors (keep this folder out of the
students' copies). Each `# %% exercise: <id>` section replaces the notebook cell tagged
`exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: kernels.matmul_forward
import numba
from numba import prange


@numba.njit(parallel=True, fastmath=True)
def matmul_forward(out, inp, weight, bias):
    C, OC = inp.shape[-1], weight.shape[0]
    rows_in = inp.reshape(-1, C)
    rows_out = out.reshape(-1, OC)
    for n in prange(rows_in.shape[0]):       # rows are independent: one per thread at a time
        x = rows_in[n]
        for o in range(OC):
            w = weight[o]                    # row o of weight: contiguous, like x
            acc = 0.0 if bias is None else bias[o]
            for i in range(C):
                acc += x[i] * w[i]
            rows_out[n, o] = acc
