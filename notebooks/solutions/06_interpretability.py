"""Reference solutions of 06_interpretability.ipynb, for instructors (keep this folder out
of the students' copies). Each `# %% exercise: <id>` section replaces the notebook cell
tagged `exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: interp.induction_scores
import numpy as np


def induction_scores(att, tokens):
    B, NH, T, _ = att.shape
    total, count = np.zeros(NH), 0
    for b in range(B):
        last_seen = {}                          # token -> the last position it was at
        for t in range(T):
            s = last_seen.get(tokens[b, t])
            if s is not None:                   # seen before: the induction target is s + 1
                total += att[b, :, t, s + 1]
                count += 1
            last_seen[tokens[b, t]] = t
    return total / count

# %% exercise: interp.logit_lens
import numpy as np


def logit_lens(model, name):
    x = model.acts[name]                                        # (B, T, C)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed = (x - mean) / np.sqrt(var + 1e-5)
    h = normed * model.params["ln_f.weight"] + model.params["ln_f.bias"]
    return h @ model.params["wte"].T                            # (B, T, V)
