"""How fast is a training step? explorer against PyTorch eager, side by side.

    explorer bench --configs tiny,small --rounds 3          # the CLI
    python -m explorer.lab.bench --configs tiny --rounds 1      # the same, without the CLI
    python benchmarks/profile_step.py --configs tiny        # where explorer's time goes

A training step is forward + backward + gradient clipping + AdamW, on random tokens. Each
framework runs in its own process (so neither sees the other's thread pools or caches),
warms up first (Numba compiles and starts its threads), then times `steps` steps. Rounds
alternate explorer and PyTorch processes, so a noisy neighbour slows both alike.

The work per step is counted as in the GPT-2 / llm.c papers:

    F = 6 N B T + 12 L C T B T     (N = parameters except the position table)

6 N B T is the matrix multiplies of forward (2 per weight per token) and backward (4);
the second term is attention's q @ k^T and att @ v. Dividing F by the step time gives
GFLOP/s, which we compare with the best float32 matrix multiply NumPy's BLAS reaches on
this machine, measured in the same run.

PyTorch is optional: without it (or without the repository's benchmarks/ folder, which
holds the PyTorch model) the bench times explorer alone and says so.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np  # (explorer, this module's package, has set the thread settings already)

RESULT_MARK = "BENCH_RESULT "   # a worker's last stdout line: this mark, then JSON
#: What explorer/kernels/runtime.py sets for its own thread pools; PyTorch runs with its defaults.
EXPLORER_ENV = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "KMP_BLOCKTIME")
TORCH_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "torch_gpt2_bench.py"


@dataclass(frozen=True)
class BenchConfig:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int
    batch_size: int   # B
    seq_len: int      # T
    warmup: int       # untimed steps first (compile, thread start, caches)
    steps: int        # timed steps per process


CONFIGS = {
    "tiny": BenchConfig(4, 4, 128, 65, 128, batch_size=32, seq_len=128, warmup=3, steps=10),
    "small": BenchConfig(6, 6, 384, 65, 256, batch_size=16, seq_len=256, warmup=2, steps=5),
    "124m": BenchConfig(12, 12, 768, 50257, 1024, batch_size=4, seq_len=64, warmup=2, steps=4),
}
ALIASES = {"gpt2-124m": "124m", "gpt2": "124m", "124M": "124m"}


def get_config(name):
    key = ALIASES.get(name, ALIASES.get(name.lower(), name.lower()))
    if key not in CONFIGS:
        raise ValueError(f"unknown bench config {name!r}; expected one of: {', '.join(CONFIGS)}")
    return CONFIGS[key]


# --------------------------------------------------------------------- arithmetic
def count_params(cfg, exclude_position_embedding=True):
    """GPT-2's parameter count from the shapes alone (LM head tied to wte)."""
    C, L = cfg.n_embd, cfg.n_layer
    per_block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C)
    n = cfg.vocab_size * C + L * per_block + 2 * C
    return n if exclude_position_embedding else n + cfg.block_size * C


def step_flops(cfg):
    """F = 6 N B T + 12 L C T B T: floating-point operations of one training step."""
    B, T = cfg.batch_size, cfg.seq_len
    return 6 * count_params(cfg) * B * T + 12 * cfg.n_layer * cfg.n_embd * T * B * T


class RandomTokens:
    """A dataset of uniformly random tokens: the step's cost does not depend on the text."""
    tokenizer = None

    def __init__(self, vocab_size, seq_len):
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def get_batch(self, split, batch_size, block_size, rng):
        tokens = rng.integers(0, self.vocab_size, size=(batch_size, block_size + 1), dtype="int64")
        return tokens[:, :-1].copy(), tokens[:, 1:].copy()


# --------------------------------------------------------------------- workers (run in subprocesses)
def _runtime_info():
    """Thread layers and counts as this process sees them (after kernels have run)."""
    import numba
    from threadpoolctl import threadpool_info

    try:
        layer = numba.threading_layer()
    except ValueError:               # no parallel kernel ran yet
        layer = "(not started)"
    blas = [f"{p.get('internal_api')} {p.get('version')} x{p.get('num_threads')}" for p in threadpool_info()]
    return {"numba_threading_layer": layer, "numba_threads": numba.get_num_threads(),
            "thread_pools": blas, "cpu_count": usable_cores(),
            "env": {k: os.environ.get(k) for k in EXPLORER_ENV}}


def usable_cores():
    """Cores this process may run on (taskset / cgroup affinity), as Numba counts them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _make_trainer(cfg, seed=0):
    from explorer import GPT, GPTConfig
    from explorer.train.trainer import Trainer

    model = GPT(GPTConfig(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.block_size), seed=seed)
    data = RandomTokens(cfg.vocab_size, cfg.seq_len)
    return Trainer(model, data, batch_size=cfg.batch_size, lr=1e-4, seed=seed)


def explorer_step_worker(cfg):
    """Warm up, then time cfg.steps training steps. Returns a JSON-able dict."""
    trainer = _make_trainer(cfg)
    first_loss = trainer.step()["loss"]
    for _ in range(cfg.warmup - 1):
        trainer.step()
    times = []
    for _ in range(cfg.steps):
        t0 = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - t0)
    return {"step_s": times, "first_loss": first_loss, **_runtime_info()}


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
    trainer = _make_trainer(cfg)
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


# --------------------------------------------------------------------- launching workers
def _run_worker(cmd, env=None, timeout=1800):
    """Run a worker process; return its result dict (parsed from its last marked line)."""
    env = dict(os.environ if env is None else env)
    # the workers import this very copy of explorer, installed or not
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"benchmark worker {' '.join(map(str, cmd[:4]))} ... failed with exit code "
                       f"{done.returncode}:\n{done.stderr[-3000:]}")


def _explorer_cmd(mode, cfg=None, **extra):
    spec = {"mode": mode, "config": asdict(cfg) if cfg else None, **extra}
    return [sys.executable, "-m", "explorer.lab.bench", "--worker", json.dumps(spec)]


def torch_available():
    """Why PyTorch can't be benchmarked here, or None when it can."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install torch): timing explorer alone"
    if not TORCH_SCRIPT.exists():
        return (f"the PyTorch reference model {TORCH_SCRIPT} is missing (it ships in the "
                f"repository's benchmarks/ folder, not in the package): timing explorer alone")
    return None


def _torch_env():
    """PyTorch runs with its own defaults: drop the thread settings explorer exported."""
    return {k: v for k, v in os.environ.items() if k not in EXPLORER_ENV}


def _torch_cmd(cfg):
    return [sys.executable, str(TORCH_SCRIPT), "--n-layer", str(cfg.n_layer), "--n-head", str(cfg.n_head),
            "--n-embd", str(cfg.n_embd), "--vocab-size", str(cfg.vocab_size),
            "--block-size", str(cfg.block_size), "--batch-size", str(cfg.batch_size),
            "--seq-len", str(cfg.seq_len), "--warmup", str(cfg.warmup), "--steps", str(cfg.steps)]


def measure_gemm_peak(sizes=(1024, 2048, 3072)):
    return _run_worker(_explorer_cmd("gemm", sizes=list(sizes)))


def measure_startup(cfg=None, cold=True):
    """Start-up times on `cfg` (tiny by default), each in a fresh process.
    cold: with an empty Numba cache (NUMBA_CACHE_DIR -> a new folder), then warm from that
    folder. cold=False: only warm, from the Numba cache as it is now."""
    cfg = cfg or CONFIGS["tiny"]
    code = ("import time; t0 = time.perf_counter(); import explorer; t1 = time.perf_counter(); "
            "import json, sys; from explorer.lab.bench import BenchConfig, RESULT_MARK, startup_worker; "
            "spec = json.loads(sys.argv[1]); "
            "r = startup_worker(t0, t1, BenchConfig(**spec['config']), spec['recompile']); "
            "print(RESULT_MARK + json.dumps(r))")

    def run(cache_dir, recompile):
        env = dict(os.environ, **({"NUMBA_CACHE_DIR": cache_dir} if cache_dir else {}))
        spec = json.dumps({"config": asdict(cfg), "recompile": recompile})
        t0 = time.perf_counter()
        result = _run_worker([sys.executable, "-c", code, spec], env=env)
        result["process_s"] = time.perf_counter() - t0     # with the interpreter's own start
        return result

    if not cold:
        return {"warm": run(None, recompile=True)}
    with tempfile.TemporaryDirectory(prefix="explorer-numba-cache-") as cache_dir:
        return {"cold": run(cache_dir, recompile=False), "warm": run(cache_dir, recompile=True)}


# --------------------------------------------------------------------- the benchmark
def run_bench(configs=("tiny", "small"), rounds=3, steps=None, warmup=None, torch=True,
              startup=True, gemm_sizes=(1024, 2048, 3072), log=print):
    """Time each config in `rounds` rounds of alternating explorer / PyTorch processes.
    Returns a JSON-able dict; format_report() prints it. `log` gets progress lines."""
    why_no_torch = torch_available() if torch else "PyTorch timing turned off"
    report = {"machine": machine_info(), "load_average_before": os.getloadavg(),
              "torch_note": why_no_torch, "configs": {}}
    log("measuring the float32 GEMM peak (NumPy matmul) ...")
    peaks = [measure_gemm_peak(gemm_sizes)]
    for name in configs:
        cfg = get_config(name)
        cfg = BenchConfig(**{**asdict(cfg), **({"steps": steps} if steps else {}),
                             **({"warmup": warmup} if warmup else {})})
        runs = {"explorer": [], "torch": []}
        for r in range(rounds):
            # alternate who goes first, so a slow spell hits both alike
            for framework in (("explorer", "torch") if r % 2 == 0 else ("torch", "explorer")):
                if framework == "torch" and why_no_torch:
                    continue
                cmd, env = ((_explorer_cmd("step", cfg), None) if framework == "explorer"
                            else (_torch_cmd(cfg), _torch_env()))
                result = _run_worker(cmd, env=env)
                runs[framework].append(result)
                log(f"  {name} round {r + 1}/{rounds} {framework:8s} median "
                    f"{1e3 * statistics.median(result['step_s']):9.1f} ms/step")
        report["configs"][name] = {"config": asdict(cfg), "flops_per_step": step_flops(cfg),
                                   "params_without_wpe": count_params(cfg), "runs": runs}
    log("measuring the float32 GEMM peak again ...")
    peaks.append(measure_gemm_peak(gemm_sizes))
    report["gemm_peak"] = {"gflops": max(p["gflops"] for p in peaks), "measurements": peaks}
    for entry in report["configs"].values():
        entry["summary"] = summarize(entry, report["gemm_peak"]["gflops"])
    if startup:
        log("measuring start-up (cold Numba cache, warm cache, one kernel recompiled) ...")
        try:
            report["startup"] = measure_startup()
        except (RuntimeError, subprocess.TimeoutExpired) as e:   # keep the step timings anyway
            report["startup_error"] = str(e)
            log(f"start-up measurement failed: {e}")
    report["load_average_after"] = os.getloadavg()
    return report


def summarize(entry, peak_gflops):
    """Median step time per framework (all timed steps of all rounds pooled), the ratio
    explorer / torch, GFLOP/s and the share of the GEMM peak."""
    out = {}
    for framework, runs in entry["runs"].items():
        if not runs:
            continue
        times = [t for run in runs for t in run["step_s"]]
        median = statistics.median(times)
        gflops = entry["flops_per_step"] / median / 1e9
        out[framework] = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(times),
                          "round_medians_ms": [1e3 * statistics.median(r["step_s"]) for r in runs],
                          "gflops": gflops, "percent_of_peak": 100 * gflops / peak_gflops,
                          "first_loss": runs[0]["first_loss"]}
    if "explorer" in out and "torch" in out:
        out["ratio_explorer_over_torch"] = out["explorer"]["median_ms"] / out["torch"]["median_ms"]
    return out


def machine_info():
    import platform

    import numba
    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": usable_cores(), "machine_cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__}


# --------------------------------------------------------------------- the report
def format_report(report):
    """The report as a readable text table."""
    m, peak = report["machine"], report["gemm_peak"]
    lines = [f"explorer bench: {m['cpu']}, {m['cores']} of {m['machine_cores']} cores usable, Python {m['python']}, "
             f"numpy {m['numpy']}, numba {m['numba']}",
             "float32 GEMM peak (NumPy matmul, best of sizes "
             f"{', '.join(map(str, peak['measurements'][0]['by_size']))})"
             f": {peak['gflops']:.1f} GFLOP/s  (start {peak['measurements'][0]['gflops']:.1f}, "
             f"end {peak['measurements'][-1]['gflops']:.1f})",
             "load average (1 min) before / after: "
             f"{report['load_average_before'][0]:.2f} / {report['load_average_after'][0]:.2f}"]
    if report["torch_note"]:
        lines.append(f"NOTE: {report['torch_note']}")
    lines += ["", f"{'config':7s} {'B x T':>8s} {'GFLOP/step':>10s} | {'explorer ms':>11s} {'torch ms':>9s} "
              f"{'ratio':>6s} | {'explorer GFLOP/s':>17s} {'torch GFLOP/s':>15s}"]
    for name, entry in report["configs"].items():
        s, c = entry["summary"], entry["config"]
        ex, th = s.get("explorer"), s.get("torch")
        cell = lambda r: f"{r['gflops']:6.1f} ({r['percent_of_peak']:3.0f}%)" if r else "-"  # noqa: E731
        lines.append(f"{name:7s} {c['batch_size']:>3d} x {c['seq_len']:<4d} {entry['flops_per_step'] / 1e9:10.2f} | "
                     f"{ex['median_ms'] if ex else float('nan'):11.1f} "
                     f"{th['median_ms'] if th else float('nan'):9.1f} "
                     f"{s.get('ratio_explorer_over_torch', float('nan')):6.2f} | "
                     f"{cell(ex):>17s} {cell(th):>15s}")
    lines += ["", "rounds (median ms per process, in run order):"]
    for name, entry in report["configs"].items():
        for framework, r in entry["summary"].items():
            if isinstance(r, dict):
                lines.append(f"  {name:7s} {framework:8s} " + "  ".join(f"{x:.1f}" for x in r["round_medians_ms"])
                             + f"   (fastest step {r['min_ms']:.1f} ms; first loss {r['first_loss']:.3f})")
    lines += ["", "threads:"] + _thread_lines(report)
    if "startup" in report:
        lines += ["", "start-up (tiny config, fresh processes):"] + _startup_lines(report["startup"])
    if "startup_error" in report:
        lines += ["", f"start-up measurement failed: {report['startup_error']}"]
    return "\n".join(lines)


def _thread_lines(report):
    first = next(iter(report["configs"].values()), None)
    if first is None:
        return []
    lines = []
    for framework, runs in first["runs"].items():
        if runs:
            info = runs[0]
            if framework == "explorer":
                lines.append(f"  explorer: numba layer {info['numba_threading_layer']} x{info['numba_threads']}; "
                             f"BLAS {', '.join(info['thread_pools'])}; env {info['env']}")
            else:
                lines.append(f"  torch {info['torch_version']}: {info['torch_threads']} threads "
                             f"(interop {info['interop_threads']}); env {info['env']}")
    return lines


def _startup_lines(startup):
    lines = []
    for kind, r in startup.items():
        lines.append(f"  {kind:4s} cache: import explorer {r['import_s']:.2f} s + first step {r['first_step_s']:.2f} s"
                     f" = {r['import_and_first_step_s']:.2f} s (Python's own start adds "
                     f"{r['process_s'] - r['whole_worker_s']:.2f} s)")
        if "recompile_s" in r:
            lines.append(f"  recompile one kernel (a new GELU, numba.njit): {r['recompile_s']:.2f} s; "
                         f"a step with it {r['step_with_new_kernel_s']:.2f} s (shipped: {r['plain_step_s']:.2f} s)")
    return lines


def write_json(report, path):
    """Write the report atomically (a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# --------------------------------------------------------------------- command line
def build_parser():
    p = argparse.ArgumentParser(prog="explorer bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="tiny,small",
                   help=f"comma-separated, from: {', '.join(CONFIGS)} (default: tiny,small)")
    p.add_argument("--rounds", type=int, default=3, help="processes per framework and config (default 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default: per config)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: per config)")
    p.add_argument("--gemm-sizes", default="1024,2048,3072",
                   help="square matmul sizes for the float32 peak (default 1024,2048,3072)")
    p.add_argument("--json", metavar="PATH", help="also write the full results as JSON")
    p.add_argument("--no-torch", action="store_true", help="time explorer alone")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    p.add_argument("--worker", help=argparse.SUPPRESS)   # internal: run one measurement, print JSON
    return p


def main_bench(argv=None):
    """Entry point of `explorer bench`; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker_main(json.loads(args.worker))
    for number, what in ((args.rounds, "--rounds"), (args.steps, "--steps"), (args.warmup, "--warmup")):
        if number is not None and number < 1:
            raise SystemExit(f"{what} must be at least 1, got {number}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    try:
        for c in configs:
            get_config(c)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    try:
        gemm_sizes = tuple(int(n) for n in args.gemm_sizes.split(","))
    except ValueError:
        raise SystemExit(f"--gemm-sizes must be comma-separated integers, got {args.gemm_sizes!r}") from None
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    report = run_bench(configs, rounds=args.rounds, steps=args.steps, warmup=args.warmup,
                       torch=not args.no_torch, startup=not args.no_startup, gemm_sizes=gemm_sizes,
                       log=log)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwrote {args.json}")
    return 0


def _worker_main(spec):
    mode = spec["mode"]
    if mode == "step":
        result = explorer_step_worker(BenchConfig(**spec["config"]))
    elif mode == "gemm":
        result = gemm_peak_worker(tuple(spec["sizes"]))
    else:
        raise SystemExit(f"unknown worker mode {mode!r}; expected 'step' or 'gemm'")
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
