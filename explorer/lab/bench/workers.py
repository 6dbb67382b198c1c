"""What runs inside a benchmark's worker process: a timed training step, the GEMM peak, start-up.

Each worker prints its result as its last stdout line, RESULT_MARK then JSON (launch.py reads
it). Workers are started as `python -m explorer.lab.bench --worker SPEC` (see worker_main),
except the start-up worker, which times `import explorer` itself (launch.measure_startup).
"""
import json
import os
import time

import numpy as np  # (explorer, this module's package, has set the thread settings already)

from .configs import BenchConfig, RandomTokens

RESULT_MARK = "BENCH_RESULT "   # a worker's last stdout line: this mark, then JSON
#: What explorer/kernels/runtime.py sets for its own thread pools; PyTorch's worker runs without
#: them, but with the same OpenMP wait policy (launch.torch_env says why).
EXPLORER_ENV = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "KMP_BLOCKTIME")


def _runtime_info():
    """Thread layers and counts as this process sees them (after kernels have run)."""
    import numba
    from threadpoolctl import threadpool_info

    from .blas import blas_pools

    try:
        layer = numba.threading_layer()
    except ValueError:               # no parallel kernel ran yet
        layer = "(not started)"
    blas = [f"{p.get('internal_api')} {p.get('version')} x{p.get('num_threads')}" for p in threadpool_info()]
    return {"numba_threading_layer": layer, "numba_threads": numba.get_num_threads(),
            "thread_pools": blas, "blas": blas_pools(), "cpu_count": usable_cores(),
            "env": {k: os.environ.get(k) for k in EXPLORER_ENV}}


def usable_cores():
    """Cores this process may run on (taskset / cgroup affinity), as Numba counts them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_trainer(cfg, seed=0):
    """A Trainer for a fresh GPT of config `cfg` on random tokens (also benchmarks/profile_step.py's)."""
    from explorer import GPT, GPTConfig
    from explorer.train.trainer import Trainer

    model = GPT(GPTConfig(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.block_size), seed=seed)
    data = RandomTokens(cfg.vocab_size, cfg.seq_len)
    return Trainer(model, data, batch_size=cfg.batch_size, lr=1e-4, seed=seed)


def kernel_versions():
    """For each kernel with shipped variants (kernels.VARIANTS), the one registered now."""
    from explorer import kernels

    return {name: next((v for v, fn in options.items() if fn is kernels.get(name)), "(not shipped)")
            for name, options in kernels.VARIANTS.items()}


def explorer_step_worker(cfg, variants=None):
    """Warm up, then time cfg.steps training steps, with the shipped variants named in
    `variants` ({kernel: variant}) registered. Returns a JSON-able dict."""
    from explorer import kernels

    with kernels.use(**(variants or {})):
        trainer = make_trainer(cfg)
        first_loss = trainer.step()["loss"]
        for _ in range(cfg.warmup - 1):
            trainer.step()
        times = []
        for _ in range(cfg.steps):
            t0 = time.perf_counter()
            trainer.step()
            times.append(time.perf_counter() - t0)
        versions = kernel_versions()
    return {"step_s": times, "first_loss": first_loss, "kernel_versions": versions, **_runtime_info()}


def gemm_peak_worker(sizes=(1024, 2048, 3072), repeats=5):
    """Best float32 GFLOP/s of NumPy's matmul (BLAS) over a few square sizes."""
    rng = np.random.default_rng(0)
    best = {}
    for n in sizes:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        out = np.empty((n, n), np.float32)
        np.matmul(a, b, out=out)                        # warm up the BLAS threads
        seconds = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeats))  # noqa: B023 (called here)
        best[n] = 2 * n ** 3 / seconds / 1e9
    return {"gflops": max(best.values()), "by_size": best, **_runtime_info()}


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _student_gelu(out, inp):
    """A "new" GELU, compiled fresh to time how long one kernel takes to recompile."""
    for i in range(inp.size):
        x = inp.flat[i]
        u = np.float32(0.7978845608) * (x + np.float32(0.044715) * x * x * x)
        out.flat[i] = x / (np.float32(1.0) + np.exp(np.float32(-2.0) * u))


def startup_worker(t_start, t_imported, cfg, recompile):
    """After `import explorer` (timed by the caller): build a model and take the first step;
    with `recompile`, then compile a new GELU kernel and take a step with it."""
    t0 = time.perf_counter()
    trainer = make_trainer(cfg)
    trainer.step()
    first_step = time.perf_counter() - t0
    result = {"import_s": t_imported - t_start, "first_step_s": first_step,
              "import_and_first_step_s": time.perf_counter() - t_start}
    if recompile:
        import numba

        from explorer import kernels

        plain_step = min(_timed(trainer.step) for _ in range(2))
        fresh = numba.njit(cache=False, fastmath=True)(_student_gelu)
        # Numba compiles on the first call, for the argument types: float32 3-D C arrays
        tiny = np.zeros((1, 1, 4), np.float32)
        compile_s = _timed(lambda: fresh(tiny.copy(), tiny))
        with kernels.use(gelu_forward=fresh):
            step_with_new = _timed(trainer.step)
        result.update(plain_step_s=plain_step, recompile_s=compile_s, step_with_new_kernel_s=step_with_new)
    result["whole_worker_s"] = time.perf_counter() - t_start
    return result


def worker_main(spec):
    """A worker process's work: one measurement (spec["mode"]), printed as RESULT_MARK + JSON."""
    mode = spec["mode"]
    if mode == "step":
        result = explorer_step_worker(BenchConfig(**spec["config"]), spec.get("variants"))
    elif mode == "gemm":
        result = gemm_peak_worker(tuple(spec["sizes"]))
    else:
        raise SystemExit(f"unknown worker mode {mode!r}; expected 'step' or 'gemm'")
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0
