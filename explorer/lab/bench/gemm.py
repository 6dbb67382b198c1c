"""A training step's matrix products: their shapes, their FLOPs, and the floor they set.

The floor of a step is its GEMM work over the GEMM ceiling (the best float32 GFLOP/s NumPy's
BLAS reaches on large square products, measured in the same run): no implementation that
does its products on this BLAS can be faster, whatever it does with the rest of the step.
benchmarks/gemm_ceiling.py times each product at its own shape, a tighter (higher) floor.
"""
import statistics
import time


def products(cfg):
    """(name, m, k, n, how, count per step) for one step's linear-layer products; how says which
    operand is transposed, as in explorer/kernels/matmul.py: 'x@w.T' (forward), 'dy@w' (input
    gradient), 'dy.T@x' (weight gradient)."""
    N, C, V = cfg.batch_size * cfg.seq_len, cfg.n_embd, cfg.vocab_size
    linears = [("attn.qkv", C, 3 * C, cfg.n_layer), ("attn.proj", C, C, cfg.n_layer),
               ("mlp.fc", C, 4 * C, cfg.n_layer), ("mlp.proj", 4 * C, C, cfg.n_layer),
               ("lm_head", C, V, 1)]
    out = []
    for name, c_in, c_out, count in linears:
        out.append((name + " forward", N, c_in, c_out, "x@w.T", count))
        out.append((name + " d(input)", N, c_out, c_in, "dy@w", count))
        out.append((name + " d(weight)", c_out, N, c_in, "dy.T@x", count))
    return out


def attention_flops(cfg):
    """Attention's products in one step, per layer q @ k^T and att @ v forward (2 B T T C each)
    and their four gradient products backward, over the full T x T square (as GPT-2's and
    PyTorch's FLOP counts do; a causal kernel may skip the masked half)."""
    B, T, C = cfg.batch_size, cfg.seq_len, cfg.n_embd
    return 12 * cfg.n_layer * B * T * T * C


def gemm_flops(cfg):
    """All matrix-product FLOPs of a training step (forward and backward): the linear layers,
    the tied LM head and attention. Biases, layernorms, softmax, GELU and AdamW are not GEMMs."""
    return sum(2 * m * k * n * count for _, m, k, n, _, count in products(cfg)) + attention_flops(cfg)


def floor_ms(cfg, ceiling_gflops):
    """The step's FLOP floor in milliseconds: its GEMM FLOPs at the GEMM ceiling."""
    return gemm_flops(cfg) / (ceiling_gflops * 1e9) * 1e3


def operands(lib, m, k, n, how, rng):
    """(call, left, right, out): call() writes left @ right, an (m, k) @ (k, n) product whose
    operands are laid out as `how` says, into out."""
    import numpy as np

    if how == "x@w.T":
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32)
    elif how == "dy@w":
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    else:                                           # dy.T @ x: dy is (k, m), x is (k, n)
        a, b = rng.standard_normal((k, m), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    if lib == "torch":
        import torch

        a, b, out = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        left = a.t() if how == "dy.T@x" else a
        right = b.t() if how == "x@w.T" else b
        return (lambda: torch.matmul(left, right, out=out)), left, right, out
    left = a.T if how == "dy.T@x" else a
    right = b.T if how == "x@w.T" else b
    return (lambda: np.matmul(left, right, out=out)), left, right, out


def median_seconds(fn, repeats=5):
    """Median seconds of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_products(lib, cfg, repeats):
    """Median seconds of each of cfg's products (products()) with `lib`'s matmul, in this process."""
    import numpy as np

    rng = np.random.default_rng(0)
    seconds = {}
    for name, m, k, n, how, _ in products(cfg):
        fn = operands(lib, m, k, n, how, rng)[0]
        fn()                                    # warm: the BLAS threads wake, caches fill
        seconds[name] = median_seconds(fn, repeats)
    return seconds
