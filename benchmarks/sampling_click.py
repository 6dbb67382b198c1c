"""SamplingView's "Next token" click at GPT-2 124M's shapes, after a ~270-token prompt.

    for side in . /tmp/explorer-main; do      # this checkout, then another (e.g. main)
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$side python benchmarks/sampling_click.py
    done

Random weights (GPTConfig(), GPT's own init, seed 0), GPT-2's tokenizer (TIKTOKEN_CACHE_DIR, or
../shared/data/tiktoken_cache beside the checkout), a prompt decoded from 256 random token ids.
One click to warm up, then 10 clicks timed; prints the median and every click in ms.
"""
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "..", "..", "shared", "data", "tiktoken_cache"))

from explorer import GPT, GPTConfig  # noqa: E402
from explorer.tokenizers import GPT2Tokenizer  # noqa: E402
from explorer.viz import SamplingView  # noqa: E402

tok = GPT2Tokenizer()
view = SamplingView(GPT(GPTConfig(), seed=0), tok, n_bars=10,
                    prompt=tok.decode([int(i) for i in np.random.default_rng(0).integers(0, 50000, 256)]))
view.next_button.click()
times = []
for _ in range(10):
    started = time.perf_counter()
    view.next_button.click()
    times.append(1000 * (time.perf_counter() - started))
print(f"{len(view.prompt_ids)}-token prompt, {len(view.tokens)} tokens after: median click "
      f"{statistics.median(times):.1f} ms; clicks {[round(t) for t in times]}; load {os.getloadavg()}")
