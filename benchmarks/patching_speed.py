"""Activation patching at GPT-2 124M's size: this checkout against another (e.g. main), interleaved.

    git archive main | tar -x -C /tmp/explorer-main
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/patching_speed.py \\
        --baseline /tmp/explorer-main [--rounds 3]

The IOI prompts of known_results.py ("When Mary and John went to the store, John gave a drink
to", the second name swapped in the corrupted one), GPT-2's tokens, on random weights with GPT-2
124M's shapes (GPTConfig() and GPT's own init, seed 0). Each round runs each side in a fresh
process of its own (PYTHONPATH = its checkout), alternating which goes first. A worker times,
after a warm-up on a 3-token prompt (Numba's compile or cache load), one patch_residual
(n_layer x T runs) and one patch_heads (n_layer x NH runs) on the IOI prompts. The figures are
medians over the rounds; the two sides' patched values are compared too.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

MARK = "PATCHING_RESULT "
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def worker(prompts):
    import threadpoolctl

    from explorer import GPT, GPTConfig
    from explorer.interp import patch_heads, patch_residual
    clean, corrupted, mary, john = (np.array(p) for p in prompts)
    model = GPT(GPTConfig(), seed=0)
    patch_residual(model, clean[:3], corrupted[:3], mary, john)      # warm-up: compile or load
    out = {}
    for name, fn in (("residual", patch_residual), ("heads", patch_heads)):
        started = time.perf_counter()
        result = fn(model, clean, corrupted, mary, john)
        out[f"{name}_s"] = time.perf_counter() - started
        out[name] = result.patched.tolist()
    out["blas"] = [(i["internal_api"], i["version"], i.get("architecture"), i["num_threads"])
                   for i in threadpoolctl.threadpool_info()]
    return out


def run_worker(path, prompts):
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(prompts)],
                          capture_output=True, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the worker on {path} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="another checkout's root (e.g. main's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(MARK + json.dumps(worker(json.loads(args.worker))))
        return
    if not args.baseline:
        parser.error("--baseline PATH is required: the checkout to compare with")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(here, "..", "shared", "data", "tiktoken_cache"))
    sys.path.insert(0, here)
    from explorer.tokenizers import GPT2Tokenizer
    tok = GPT2Tokenizer()
    prompts = [tok.encode(IOI_CLEAN), tok.encode(IOI_CORRUPTED), *tok.encode(" Mary"), *tok.encode(" John")]
    print(f"IOI prompt: {len(prompts[0])} tokens; load average before: {os.getloadavg()}, "
          f"{os.cpu_count()} cores", flush=True)
    sides = {"this checkout": here, "baseline": os.path.abspath(args.baseline)}
    results = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            results[side].append(run_worker(sides[side], prompts))
            last = results[side][-1]
            print(f"round {r + 1} {side}: patch_residual {last['residual_s']:.2f} s, "
                  f"patch_heads {last['heads_s']:.2f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    print("\n| medians | this checkout (s) | baseline (s) | baseline / this |\n|---|---|---|---|")
    for key, label in (("residual_s", "patch_residual"), ("heads_s", "patch_heads")):
        ours, theirs = (statistics.median(r[key] for r in results[s]) for s in sides)
        print(f"| {label} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x |")
    for key in ("residual", "heads"):
        diff = max(np.max(np.abs(np.array(a[key]) - np.array(b[key])))
                   for a, b in zip(results["this checkout"], results["baseline"]))
        print(f"{key}: max |this - baseline| of the patched logit differences {diff:.2e}")
    print("BLAS:", results["this checkout"][0]["blas"])
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
