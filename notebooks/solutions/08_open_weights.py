"""Reference solution of 08_open_weights.ipynb, for instructors (keep this folder out of the
students' copies). Each `# %% exercise: <id>` section replaces the notebook cell tagged
`exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: open_weights.patch_residual
import numpy as np

from explorer.interp import cache_activations, run_with_hooks


def patch_residual(model, clean, corrupted, answer, other):
    n_layer, T = model.config.n_layer, clean.shape[-1]
    # the stream entering block l: the embedding for block 0, then each block's output
    names = ["encoded"] + [f"blocks.{l}.residual2" for l in range(n_layer - 1)]
    cache = cache_activations(model, clean, names=names)
    result = np.zeros((n_layer, T))
    for l, name in enumerate(names):
        for t in range(T):
            def copy_clean(x, name=name, t=t):
                x[:, t] = cache[name][:, t]
            logits = run_with_hooks(model, corrupted, {name: copy_clean})
            result[l, t] = logits[0, -1, answer] - logits[0, -1, other]
    return result
