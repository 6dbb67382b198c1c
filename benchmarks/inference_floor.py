"""How fast can GPT-2 124M inference be on this machine, whatever the implementation?

    python benchmarks/inference_floor.py [--rounds 3]

Two floors, each measured with NumPy's BLAS (what explorer's kernels call) and with PyTorch's
(what transformers calls), in separate processes, rounds alternating:

- Greedy decoding: each new token reads every weight once, 124M float32 = 498 MB. The floor is
  the time to stream them through the cores: the matrix-vector products of one decode step
  (the four per layer and the LM head, with GPT-2 124M's shapes) on fresh inputs, and a
  plain parallel sum over 498 MB (the memory read bandwidth, no BLAS). tokens/s <= 1 / that.
- The forward of one 1024-token prompt: its matrix products (the four per layer and the LM
  head over all 1024 positions) at the shapes and layouts explorer's matmul passes to BLAS.
  No implementation that uses this BLAS for them can be faster; attention, GELU, layernorm
  and the rest come on top.

benchmarks/open_weights.py measures explorer and transformers themselves; its README section
sets these floors beside them. Runs without the OpenBLAS pins (a user's machine has none).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

MARK = "INFERENCE_FLOOR "
C, V, L, T = 768, 50257, 12, 1024
# (rows, columns) of each weight a token passes through, and how many of it: GPT-2 124M
WEIGHTS = [((3 * C, C), L), ((C, C), L), ((4 * C, C), L), ((C, 4 * C), L), ((V, C), 1)]


def median_time(fn, repeats):
    # explorer.lab.bench.gemm.median_seconds does the same; not imported here because importing
    # explorer sets its OpenMP wait policy in the process, and the torch worker must not get it.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_worker(repeats):
    import numba
    import numpy as np
    import threadpoolctl

    import explorer  # noqa: F401  (explorer's thread settings, as in its kernels)

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def parallel_sum(x):
        total = 0.0
        for i in numba.prange(x.shape[0]):
            total += x[i]
        return total

    rng = np.random.default_rng(0)
    # one copy of every weight, as a model holds them (distinct arrays: nothing stays in cache)
    weights = [rng.standard_normal(shape, dtype=np.float32) for shape, n in WEIGHTS for _ in range(n)]
    flat = rng.standard_normal(sum(w.size for w in weights), dtype=np.float32)
    parallel_sum(flat[:16])
    vectors = {w.shape[1]: rng.standard_normal(w.shape[1], dtype=np.float32) for w in weights}
    outs = [np.empty(w.shape[0], np.float32) for w in weights]

    def decode_products():
        for w, out in zip(weights, outs):
            np.matmul(w, vectors[w.shape[1]], out=out)

    decode_products()
    gemv_s = median_time(decode_products, repeats)
    sum_s = median_time(lambda: parallel_sum(flat), repeats)
    x = {c: rng.standard_normal((T, c), dtype=np.float32) for c in (C, 4 * C)}
    prod_out = [np.empty((T, w.shape[0]), np.float32) for w in weights]

    def forward_products():
        for w, out in zip(weights, prod_out):
            np.matmul(x[w.shape[1]], w.T, out=out)      # explorer's matmul_forward: inp @ weight.T

    forward_products()
    forward_s = median_time(forward_products, max(3, repeats // 4))
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    return dict(gemv_s=gemv_s, sum_s=sum_s, bytes=int(flat.nbytes), forward_s=forward_s, blas=blas)


def torch_worker(repeats):
    import torch

    from explorer.lab.bench.workers import usable_cores

    torch.set_num_threads(usable_cores())
    torch.manual_seed(0)
    weights = [torch.randn(shape) for shape, n in WEIGHTS for _ in range(n)]
    vectors = {c: torch.randn(c) for c in (C, 4 * C)}
    x = {c: torch.randn(T, c) for c in (C, 4 * C)}
    with torch.no_grad():
        def decode_products():
            for w in weights:
                torch.mv(w, vectors[w.shape[1]])

        def forward_products():
            for w in weights:
                torch.nn.functional.linear(x[w.shape[1]], w)   # what transformers' layers call

        decode_products()
        forward_products()
        gemv_s = median_time(decode_products, repeats)
        forward_s = median_time(forward_products, max(3, repeats // 4))
    return dict(gemv_s=gemv_s, forward_s=forward_s, threads=torch.get_num_threads(),
                blas=torch.__config__.show().split("BLAS_INFO=")[-1].split(",")[0])


def run(side, repeats):
    from explorer.lab.bench.blas import unpinned_env
    from explorer.lab.bench.launch import torch_env

    env = unpinned_env(torch_env() if side == "torch" else None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, __file__, "--worker", side, "--repeats", str(repeats)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode or not lines:
        raise RuntimeError(f"the {side} worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        work = numpy_worker if args.worker == "numpy" else torch_worker
        print(MARK + json.dumps(work(args.repeats)))
        return 0
    sides = ["numpy"] if args.no_torch else ["numpy", "torch"]
    runs = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            runs[side].append(run(side, args.repeats))
    med = {side: {key: statistics.median(run[key] for run in runs[side])
                  for key in runs[side][0] if isinstance(runs[side][0][key], float)} for side in sides}
    params = sum(rows * cols * n for (rows, cols), n in WEIGHTS)
    flops = 2 * T * params
    print(f"NumPy's BLAS: {runs['numpy'][0]['blas']}" + (f"; PyTorch: {runs['torch'][0]['blas']}, "
          f"{runs['torch'][0]['threads']} threads" if "torch" in runs else ""))
    print(f"GPT-2 124M weights a token passes through: {params / 1e6:.1f}M = {4 * params / 1e6:.0f} MB "
          f"(medians of {args.rounds} processes per side)")
    gb = runs["numpy"][0]["bytes"] / 1e9
    print(f"memory read bandwidth (parallel sum over {gb:.2f} GB): {gb / med['numpy']['sum_s']:.1f} GB/s "
          f"-> at most {1 / med['numpy']['sum_s']:.1f} tokens/s")
    for side in sides:
        m = med[side]
        print(f"{side:>6}: a decode step's products {m['gemv_s'] * 1e3:.1f} ms -> at most "
              f"{1 / m['gemv_s']:.1f} tokens/s ({4 * params / m['gemv_s'] / 1e9:.1f} GB/s); "
              f"a 1024-token forward's products {m['forward_s'] * 1e3:.0f} ms "
              f"({flops / m['forward_s'] / 1e9:.0f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
