"""Which BLAS kernel a benchmark really ran, and keeping workplace pins out of its timings.

Some machines (CI, shared servers) set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which pin
NumPy's OpenBLAS to one CPU's kernels: on an AVX-512 CPU, `OPENBLAS_CORETYPE=Haswell` runs the
AVX2 kernels at about half the float32 GEMM speed (217-239 against 396-464 GFLOP/s on a 2-core
Zen 4, issue 18). A student's laptop has no pin, so every benchmark worker process runs with
both variables removed (`unpinned_env`); the process that starts it keeps its own environment,
so tests and CI stay as they are.

OpenBLAS reads the variables once, when it loads: a script that times work in its own process
re-runs itself without them first (`rerun_unpinned`).
"""
import os
import subprocess
import sys

#: Environment variables that pin OpenBLAS to a kernel or a cache size; workers run without them.
PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

#: The widest float32 vector instructions each OpenBLAS kernel family uses (threadpoolctl's
#: "architecture", lower-cased): 1 SSE, 2 AVX, 3 AVX2 + FMA, 4 AVX-512.
KERNEL_LEVEL = {
    "prescott": 1, "core2": 1, "penryn": 1, "dunnington": 1, "nehalem": 1, "atom": 1, "opteron": 1,
    "barcelona": 1, "bobcat": 1,
    "sandybridge": 2, "bulldozer": 2, "piledriver": 2, "steamroller": 2, "excavator": 2,
    "haswell": 3, "zen": 3,
    "skylakex": 4, "cooperlake": 4, "sapphirerapids": 4,
}
LEVEL_NAMES = {1: "SSE", 2: "AVX", 3: "AVX2", 4: "AVX-512"}


def unpinned_env(env=None):
    """A copy of `env` (default: this process's) without the OpenBLAS pins."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k not in PINS}


def rerun_unpinned(argv=None):
    """For scripts that time work in their own process: when a pin is set, run this script
    again in a child without the pins and return its exit code; None when there is no pin
    (the caller then goes on in this process). The caller's environment is left as it is."""
    if not any(k in os.environ for k in PINS):
        return None
    pinned = {k: os.environ[k] for k in PINS if k in os.environ}
    print(f"re-running without the OpenBLAS pins {pinned} (a user's machine has none)",
          file=sys.stderr, flush=True)
    argv = sys.argv if argv is None else argv
    return subprocess.run([sys.executable, *argv], env=unpinned_env()).returncode


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (Linux), or an empty set where they can't be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_level(flags):
    """The widest float32 vector level the CPU supports (see KERNEL_LEVEL), 0 if unknown."""
    for level, flag in ((4, "avx512f"), (3, "avx2"), (2, "avx"), (1, "sse4_2")):
        if flag in flags:
            return level
    return 0


def blas_pools():
    """The BLAS libraries loaded in this process, as threadpoolctl sees them, plus the pins
    this process was started with (JSON-able)."""
    from threadpoolctl import threadpool_info

    pools = [{"library": p.get("internal_api"), "version": p.get("version"),
              "architecture": p.get("architecture"), "threads": p.get("num_threads"),
              "threading_layer": p.get("threading_layer")}
             for p in threadpool_info() if p.get("user_api") == "blas"]
    return {"pools": pools, "pins": {k: os.environ.get(k) for k in PINS}}


def kernel_warnings(blas, flags):
    """Warnings for each BLAS whose kernel is older than the CPU supports, e.g. a Haswell
    (AVX2) kernel on an AVX-512 CPU. `blas` is blas_pools()'s dict; `flags` cpu_flags()'s set."""
    have = cpu_level(flags)
    out = []
    for pool in blas.get("pools", []):
        arch = pool.get("architecture")
        used = KERNEL_LEVEL.get(str(arch).lower())
        if not (used and have) or used >= have:
            continue
        pinned = {k: v for k, v in blas.get("pins", {}).items() if v is not None}
        cause = (f"the pin {', '.join(f'{k}={v}' for k, v in pinned.items())} selects it" if pinned
                 else "no pin is set, so the library chose it itself")
        out.append(f"WARNING: {pool['library']} {pool.get('version')} ran its {arch} kernel "
                   f"({LEVEL_NAMES[used]}), but this CPU supports {LEVEL_NAMES[have]}: {cause}. "
                   f"Its GEMMs run slower than on an unpinned machine; "
                   f"run with `env -u {' -u '.join(PINS)}`.")
    return out


def describe(blas):
    """One line: each BLAS, its kernel and threads, and any pin."""
    parts = [f"{p['library']} {p['version']} kernel {p['architecture']} x{p['threads']}" for p in blas["pools"]]
    pins = {k: v for k, v in blas["pins"].items() if v is not None}
    return (", ".join(parts) or "no BLAS seen by threadpoolctl") + (f"; PINNED {pins}" if pins else "; unpinned")
