"""Open weights at GPT-2 124M's size: explorer against transformers, side by side in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/open_weights.py [--rounds 3]

Random weights with GPT-2 124M's shapes (transformers' GPT2Config(), seed 0) are written once
as a safetensors folder. Then, round after round, each side runs in a fresh process of its own
(alternating which goes first), so that its RSS is its own:
- load: the folder into a model (explorer.io.hf.load_hf / GPT2LMHeadModel.from_pretrained),
  seconds, and the process's peak RSS during it (its RSS before loading is printed too);
- forward: one 1024-token prompt, B=1, logits of every position (explorer: model.infer, the
  lean inference forward; transformers: model(idx) under torch.no_grad), after one warm-up
  forward of the same size; the process's RSS right after it;
- greedy generation: 100 new tokens after a 16-token prompt, then after a 256-token one, with
  the KV cache, after a short warm-up (explorer: model.generate(temperature=0); transformers:
  generate(do_sample=False)).
The figures are medians over the rounds. Both sides get every core (BLAS unpinned). The
explorer worker also checks that its greedy tokens equal transformers' on these weights.
The transformers worker never imports explorer (its thread settings would leak in).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MARK = "OPEN_WEIGHTS_RESULT "
PROMPT, NEW, LONG, LONG_PROMPT = 16, 100, 1024, 256


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def tokens(n, seed):
    return np.random.default_rng(seed).integers(0, 50257, (1, n))


def explorer_worker(folder):
    import warnings

    import threadpoolctl

    from explorer.io.hf import NoChecksumWarning, load_hf
    before = rss_mb()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoChecksumWarning)
        model = load_hf(folder)
    load_s, load_peak = time.perf_counter() - start, peak_rss_mb()
    idx = tokens(LONG, 1)
    # an explorer from before GPT.infer (--baseline) runs its training forward without targets
    infer = model.infer if hasattr(model, "infer") else model.forward
    infer(idx)                                        # warm-up: compiled kernels, first touches
    start = time.perf_counter()
    logits, _ = infer(idx)
    forward_ms = (time.perf_counter() - start) * 1e3
    after_forward = rss_mb()
    del logits
    prompt = tokens(PROMPT, 2)
    model.generate(prompt, 8, temperature=0)
    start = time.perf_counter()
    out = model.generate(prompt, NEW, temperature=0)
    tok_s = NEW / (time.perf_counter() - start)
    start = time.perf_counter()
    model.generate(tokens(LONG_PROMPT, 3), NEW, temperature=0)
    tok_s_long = NEW / (time.perf_counter() - start)
    blas = [(i["internal_api"], i["version"], i.get("architecture"), i["num_threads"])
            for i in threadpoolctl.threadpool_info()]
    return dict(rss_before_load_mb=before, load_s=load_s, load_peak_rss_mb=load_peak, forward_ms=forward_ms,
                rss_after_forward_mb=after_forward, tok_s=tok_s, tok_s_long=tok_s_long,
                tokens=out[0, PROMPT:].tolist(), blas=blas)


def transformers_worker(folder):
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    before = rss_mb()
    start = time.perf_counter()
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    load_s, load_peak = time.perf_counter() - start, peak_rss_mb()
    idx = torch.from_numpy(tokens(LONG, 1))
    with torch.no_grad():
        model(idx)
        start = time.perf_counter()
        logits = model(idx).logits
        forward_ms = (time.perf_counter() - start) * 1e3
        after_forward = rss_mb()
        del logits
        prompt = torch.from_numpy(tokens(PROMPT, 2))
        greedy = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
        model.generate(prompt, max_new_tokens=8, **greedy)
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, **greedy)
        tok_s = NEW / (time.perf_counter() - start)
        start = time.perf_counter()
        model.generate(torch.from_numpy(tokens(LONG_PROMPT, 3)), max_new_tokens=NEW, min_new_tokens=NEW, **greedy)
        tok_s_long = NEW / (time.perf_counter() - start)
    return dict(rss_before_load_mb=before, load_s=load_s, load_peak_rss_mb=load_peak, forward_ms=forward_ms,
                rss_after_forward_mb=after_forward, tok_s=tok_s, tok_s_long=tok_s_long, tokens=out[0, PROMPT:].tolist(),
                torch_threads=torch.get_num_threads(), attn=model.config._attn_implementation)


def write_weights(folder):
    import torch
    import transformers
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(folder, safe_serialization=True)


def run_worker(side, folder, baseline=None):
    env = dict(os.environ)
    if side == "baseline":   # explorer as checked out at another path, e.g. before this change
        env["PYTHONPATH"] = baseline
    worker = "transformers" if side == "transformers" else "explorer"
    proc = subprocess.run([sys.executable, __file__, "--worker", worker, "--folder", folder],
                          capture_output=True, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the {side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


ROWS = [("greedy generation, 16-token prompt, 100 new (tok/s)", "tok_s", "{:.1f}"),
        ("greedy generation, 256-token prompt, 100 new (tok/s)", "tok_s_long", "{:.1f}"),
        ("forward, one 1024-token prompt, B=1 (ms)", "forward_ms", "{:,.0f}"),
        ("process RSS after that forward (MB)", "rss_after_forward_mb", "{:,.0f}"),
        ("load 124M from safetensors (s)", "load_s", "{:.2f}"),
        ("peak RSS while loading (MB)", "load_peak_rss_mb", "{:,.0f}"),
        ("RSS before loading: imports (MB)", "rss_before_load_mb", "{:,.0f}")]


def report(results):
    med = {side: {key: statistics.median(r[key] for r in runs) for _, key, _ in ROWS}
           for side, runs in results.items()}
    base = "baseline" in results
    print(f"\n| medians of {len(results['explorer'])} rounds | explorer | transformers | explorer / transformers |"
          + (" explorer baseline |" if base else ""))
    print("|---|---|---|---|" + ("---|" if base else ""))
    for label, key, fmt in ROWS:
        e, t = med["explorer"][key], med["transformers"][key]
        print(f"| {label} | {fmt.format(e)} | {fmt.format(t)} | {e / t:.2f} |"
              + (f" {fmt.format(med['baseline'][key])} |" if base else ""))
    for side, runs in results.items():
        print(f"{side} rounds:", {key: [round(r[key], 2) for r in runs] for _, key, _ in ROWS[:4]})
    same = all(e["tokens"] == t["tokens"] for e, t in zip(results["explorer"], results["transformers"]))
    print(f"greedy tokens identical to transformers' in every round: {same}")
    print("explorer BLAS:", results["explorer"][0]["blas"])
    t = results["transformers"][0]
    print(f"transformers: torch threads {t['torch_threads']}, attention {t['attn']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=["explorer", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help="a GPT-2 safetensors folder (default: random 124M weights)")
    parser.add_argument("--baseline", help="also run the explorer worker with PYTHONPATH=this (e.g. a "
                                           "checkout of main), as a third side")
    args = parser.parse_args()
    if args.worker:
        worker = explorer_worker if args.worker == "explorer" else transformers_worker
        print(MARK + json.dumps(worker(args.folder)))
        return
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or os.path.join(tmp, "gpt2-124m-random")
        if not args.folder:
            write_weights(folder)
        results = {"explorer": [], "transformers": [], **({"baseline": []} if args.baseline else {})}
        for r in range(args.rounds):
            for side in (list(results) if r % 2 == 0 else list(results)[::-1]):
                results[side].append(run_worker(side, folder, args.baseline))
                print(f"round {r + 1} {side}: {results[side][-1]['tok_s']:.1f} tok/s, "
                      f"{results[side][-1]['forward_ms']:,.0f} ms", flush=True)
    report(results)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
