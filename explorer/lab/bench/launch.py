"""Starting benchmark worker processes, explorer's and PyTorch's, and reading their results.

Every measurement runs in a fresh process (so neither framework sees the other's thread
pools or caches); a worker prints its result as its last line (workers.RESULT_MARK + JSON).
PyTorch's worker is the model in the repository's benchmarks/ folder (TORCH_SCRIPT), run
with PyTorch's own thread settings rather than the ones explorer exports.

Every worker runs without the OpenBLAS pins (blas.PINS), whatever the environment of the
process that starts it: timings are what a user's unpinned machine would see.
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .blas import unpinned_env
from .configs import CONFIGS
from .workers import EXPLORER_ENV, RESULT_MARK

#: The folder that holds the explorer package (this file is explorer/lab/bench/launch.py):
#: workers import this very copy of explorer, installed or not.
PACKAGE_PARENT = Path(__file__).resolve().parents[3]
#: The PyTorch GPT-2 the bench compares with; it ships in a checkout, not in the package.
TORCH_SCRIPT = PACKAGE_PARENT / "benchmarks" / "torch_gpt2_bench.py"


def run_worker(cmd, env=None, timeout=1800):
    """Run a worker process, without the OpenBLAS pins; return its result dict (parsed from its
    last marked line). `env` (default: this process's) itself is left as it is."""
    env = unpinned_env(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"benchmark worker {' '.join(map(str, cmd[:4]))} ... failed with exit code "
                       f"{done.returncode}:\n{done.stderr[-3000:]}")


def explorer_cmd(mode, cfg=None, **extra):
    """The command line of an explorer worker (workers.worker_main) for `mode`."""
    spec = {"mode": mode, "config": asdict(cfg) if cfg else None, **extra}
    return [sys.executable, "-m", "explorer.lab.bench", "--worker", json.dumps(spec)]


def measure_gemm_peak(sizes=(1024, 2048, 3072)):
    return run_worker(explorer_cmd("gemm", sizes=list(sizes)))


def measure_startup(cfg=None, cold=True):
    """Start-up times on `cfg` (tiny by default), each in a fresh process.
    cold: with an empty Numba cache (NUMBA_CACHE_DIR -> a new folder), then warm from that
    folder. cold=False: only warm, from the Numba cache as it is now."""
    cfg = cfg or CONFIGS["tiny"]
    code = ("import time; t0 = time.perf_counter(); import explorer; t1 = time.perf_counter(); "
            "import json, sys; from explorer.lab.bench.configs import BenchConfig; "
            "from explorer.lab.bench.workers import RESULT_MARK, startup_worker; "
            "spec = json.loads(sys.argv[1]); "
            "r = startup_worker(t0, t1, BenchConfig(**spec['config']), spec['recompile']); "
            "print(RESULT_MARK + json.dumps(r))")

    def run(cache_dir, recompile):
        env = dict(os.environ, **({"NUMBA_CACHE_DIR": cache_dir} if cache_dir else {}))
        spec = json.dumps({"config": asdict(cfg), "recompile": recompile})
        t0 = time.perf_counter()
        result = run_worker([sys.executable, "-c", code, spec], env=env)
        result["process_s"] = time.perf_counter() - t0     # with the interpreter's own start
        return result

    if not cold:
        return {"warm": run(None, recompile=True)}
    with tempfile.TemporaryDirectory(prefix="explorer-numba-cache-") as cache_dir:
        return {"cold": run(cache_dir, recompile=False), "warm": run(cache_dir, recompile=True)}


# --------------------------------------------------------------------- PyTorch, the yardstick
def torch_available():
    """Why PyTorch can't be benchmarked here, or None when it can."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install torch): timing explorer alone"
    if not TORCH_SCRIPT.exists():
        return (f"the PyTorch reference model {TORCH_SCRIPT} is missing (it ships in the "
                f"repository's benchmarks/ folder, not in the package): timing explorer alone")
    return None


def torch_env(inductor_cache=None, wait_policy="pytorch"):
    """PyTorch's environment: explorer's exported thread settings dropped, so PyTorch runs with
    its own defaults. wait_policy="passive": its OpenMP threads sleep while waiting, as explorer's
    do. Which is fair depends on the host: on an idle one, PASSIVE slowed PyTorch's tiny step
    by ~20% (179-196 -> 221-254 ms); on a 2-core host other processes load, PyTorch's default
    spinning threads took ~700 ms for a step that takes 3-7 ms with PASSIVE (a 1-layer C16 model,
    load average 8), and the comparison would measure the load, not the frameworks.
    inductor_cache: a folder for torch.compile's cache (an empty one times a cold compile)."""
    if wait_policy not in ("pytorch", "passive"):
        raise ValueError(f"wait_policy must be 'pytorch' or 'passive', got {wait_policy!r}")
    env = {k: v for k, v in os.environ.items() if k not in EXPLORER_ENV}
    if wait_policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if inductor_cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache)
    return env


def run_torch_worker(cfg, compiled=False, wait_policy="pytorch"):
    """PyTorch's step for `cfg`, eager or torch.compile'd (then with an empty inductor cache,
    so its compile time is what a first run pays)."""
    if not compiled:
        return run_worker(torch_cmd(cfg), env=torch_env(wait_policy=wait_policy))
    with tempfile.TemporaryDirectory(prefix="explorer-bench-inductor-") as cache:
        return run_worker(torch_cmd(cfg, compiled=True), env=torch_env(cache, wait_policy))


def compiler_missing():
    """Why torch.compile (inductor writes C++) can't build here, or None when a compiler is found."""
    import shutil

    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]   # as inductor looks
    if any(shutil.which(name) for name in names):
        return None
    return f"no C++ compiler ({', '.join(names)}) found: torch.compile's inductor backend cannot build its kernels here"


def torch_cmd(cfg, compiled=False):
    """The command line of PyTorch's step worker (TORCH_SCRIPT) for config `cfg`."""
    return [sys.executable, str(TORCH_SCRIPT), *(["--compile"] if compiled else []),
            "--n-layer", str(cfg.n_layer), "--n-head", str(cfg.n_head),
            "--n-embd", str(cfg.n_embd), "--vocab-size", str(cfg.vocab_size),
            "--block-size", str(cfg.block_size), "--batch-size", str(cfg.batch_size),
            "--seq-len", str(cfg.seq_len), "--warmup", str(cfg.warmup), "--steps", str(cfg.steps)]
