"""Reference solutions of 03_layernorm.ipynb, for instructors (keep this folder out of the
students' copies). Each `# %% exercise: <id>` section replaces the notebook cell tagged
`exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: kernels.layernorm_backward
import numba


@numba.njit
def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    B, T, C = inp.shape
    dweight[:] = 0.0
    dbias[:] = 0.0
    for b in range(B):
        for t in range(T):
            # the two means every dinp of the row needs: of g and of g * norm (g = dout * weight)
            g_mean, g_norm_mean = 0.0, 0.0
            for i in range(C):
                norm = (inp[b, t, i] - mean[b, t]) * rstd[b, t]
                g = dout[b, t, i] * weight[i]
                g_mean += g
                g_norm_mean += g * norm
            g_mean /= C
            g_norm_mean /= C
            for i in range(C):
                norm = (inp[b, t, i] - mean[b, t]) * rstd[b, t]
                g = dout[b, t, i] * weight[i]
                dbias[i] += dout[b, t, i]
                dweight[i] += norm * dout[b, t, i]
                dinp[b, t, i] = rstd[b, t] * (g - g_mean - norm * g_norm_mean)
