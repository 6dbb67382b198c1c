"""Reference solutions of 07_sampling.ipynb, for instructors (keep this folder out of the
students' copies). Each `# %% exercise: <id>` section replaces the notebook cell tagged
`exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: sampling.next_token_probs
import numpy as np


def next_token_probs(logits, temperature=1.0, top_k=None):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        probs = np.zeros(len(logits))
        probs[np.argmax(logits)] = 1.0
        return probs
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < len(scaled):
        kth_largest = np.sort(scaled)[-top_k]
        scaled = np.where(scaled < kth_largest, -np.inf, scaled)
    weights = np.exp(scaled - scaled.max())     # the largest is exp(0) = 1: no overflow
    return weights / weights.sum()

# %% exercise: sampling.sample
def sample(logits, temperature, top_k, rng):
    probs = next_token_probs(logits, temperature, top_k)
    return int(rng.choice(len(probs), p=probs))
