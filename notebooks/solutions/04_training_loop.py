"""Reference solutions of 04_training_loop.ipynb, for instructors (keep this folder out of
the students' copies). Each `# %% exercise: <id>` section replaces the notebook cell tagged
`exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: kernels.adamw_update
import math

import numba


@numba.njit
def adamw_update(params, grads, m, v, segments, decay, step, lr, beta1, beta2, eps,
                 weight_decay, grad_scale):
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    for s in range(len(decay)):
        wd = weight_decay if decay[s] else 0.0
        for i in range(segments[s], segments[s + 1]):
            g = grads[i] * grad_scale
            m[i] = beta1 * m[i] + (1.0 - beta1) * g
            v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
            m_hat = m[i] / correction1
            v_hat = v[i] / correction2
            params[i] -= lr * (m_hat / (math.sqrt(v_hat) + eps) + wd * params[i])
