"""The benchmark: each config timed in rounds of alternating explorer, PyTorch eager and
torch.compile processes, between two measurements of the float32 GEMM ceiling, and
summarised (report.py prints it)."""
import os
import statistics
import subprocess
from dataclasses import asdict

from .blas import LEVEL_NAMES, cpu_flags, cpu_level, kernel_warnings
from .configs import BenchConfig, count_params, get_config, step_flops
from .gemm import floor_ms, gemm_flops
from .launch import (
    compiler_missing,
    explorer_cmd,
    measure_gemm_peak,
    measure_startup,
    run_torch_worker,
    run_worker,
    torch_available,
)
from .workers import usable_cores

FRAMEWORKS = ("explorer", "torch", "compile")   # explorer, PyTorch eager, torch.compile (inductor)


def _run_one(framework, cfg, torch_wait_policy):
    if framework == "explorer":
        return run_worker(explorer_cmd("step", cfg))
    if framework.startswith("explorer:"):       # explorer:kernel=variant
        name, variant = framework.split(":", 1)[1].split("=")
        return run_worker(explorer_cmd("step", cfg, variants={name: variant}))
    return run_torch_worker(cfg, compiled=framework == "compile", wait_policy=torch_wait_policy)


def parse_variants(specs):
    """["matmul_backward=blas2", ...] -> frameworks ["explorer:matmul_backward=blas2", ...];
    a clear error for an unknown kernel or variant."""
    from explorer import kernels

    out = []
    for spec in specs or ():
        name, _, variant = spec.partition("=")
        options = kernels.VARIANTS.get(name, {})
        if variant not in options:
            known = ", ".join(f"{k}={v}" for k, vs in kernels.VARIANTS.items() for v in vs)
            raise ValueError(f"--variant {spec!r}: no shipped variant; expected KERNEL=VARIANT, one of: {known}")
        out.append(f"explorer:{name}={variant}")
    return out


def run_bench(configs=("tiny", "small"), rounds=3, steps=None, warmup=None, torch=True, compile=True,
              startup=True, gemm_sizes=(1024, 2048, 3072), compile_rounds=None, torch_wait_policy="pytorch",
              variants=(), log=print):
    """Time each config in `rounds` rounds of explorer / PyTorch eager / torch.compile processes
    (each round starts with the next one, so a slow spell hits all alike; torch.compile only in
    the first `compile_rounds`, default all). torch_wait_policy: launch.torch_env's. Returns a
    JSON-able dict; format_report() prints it. `variants`: ["kernel=variant", ...], each timed as
    one more explorer in every round, beside the default kernels. `log` gets progress lines."""
    variant_frameworks = parse_variants(variants)
    why_no_torch = torch_available() if torch else "PyTorch timing turned off"
    why_no_compile = why_no_torch or (None if compile else "torch.compile timing turned off")
    if why_no_compile is None and compiler_missing():
        # inductor would fail: run it anyway, so the report shows what fails and after how long
        log(f"NOTE: {compiler_missing()}")
    report = {"machine": machine_info(), "load_average_before": os.getloadavg(),
              "torch_note": why_no_torch, "compile_note": why_no_compile or compiler_missing(),
              "torch_wait_policy": torch_wait_policy, "configs": {}}
    log("measuring the float32 GEMM ceiling (NumPy matmul) ...")
    peaks = [measure_gemm_peak(gemm_sizes)]
    frameworks = [f for f in FRAMEWORKS if f == "explorer" or (f == "torch" and not why_no_torch)
                  or (f == "compile" and not why_no_compile)] + variant_frameworks
    for name in configs:
        cfg = get_config(name)
        cfg = BenchConfig(**{**asdict(cfg), **({"steps": steps} if steps else {}),
                             **({"warmup": warmup} if warmup else {})})
        runs = {f: [] for f in (*FRAMEWORKS, *variant_frameworks)}
        for r in range(rounds):
            these = [f for f in frameworks if f != "compile" or compile_rounds is None or r < compile_rounds]
            for framework in these[r % len(these):] + these[:r % len(these)]:
                result = _run_one(framework, cfg, torch_wait_policy)
                runs[framework].append(result)
                what = (f"compile failed after {result['compile_failed_after_s']:.1f} s" if "compile_error" in result
                        else f"median {1e3 * statistics.median(result['step_s']):9.1f} ms/step")
                log(f"  {name} round {r + 1}/{rounds} {framework:8s} {what}")
        report["default_kernels"] = runs["explorer"][0]["kernel_versions"]
        report["configs"][name] = {"config": asdict(cfg), "flops_per_step": step_flops(cfg),
                                   "gemm_flops_per_step": gemm_flops(cfg),
                                   "params_without_wpe": count_params(cfg), "runs": runs}
    log("measuring the float32 GEMM ceiling again ...")
    peaks.append(measure_gemm_peak(gemm_sizes))
    report["gemm_peak"] = {"gflops": max(p["gflops"] for p in peaks), "measurements": peaks}
    report["blas"] = peaks[0]["blas"]
    report["warnings"] = kernel_warnings(report["blas"], cpu_flags())
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
    """Per framework: the median step time (all timed steps of all rounds pooled), GFLOP/s, the
    share of the GEMM ceiling and how many times the FLOP floor it took; the ratios of explorer
    over PyTorch eager and over torch.compile; the floor itself."""
    cfg = BenchConfig(**entry["config"])
    floor = floor_ms(cfg, peak_gflops)
    out = {"floor_ms": floor}
    for framework, runs in entry["runs"].items():
        timed = [r for r in runs if "step_s" in r]
        if framework == "compile" and len(timed) < len(runs):
            out["compile_error"] = next(r for r in runs if "compile_error" in r)["compile_error"]
            out["compile_failed_after_s"] = [r["compile_failed_after_s"] for r in runs if "compile_error" in r]
        if not timed:
            continue
        times = [t for run in timed for t in run["step_s"]]
        median = statistics.median(times)
        gflops = entry["flops_per_step"] / median / 1e9
        out[framework] = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(times),
                          "round_medians_ms": [1e3 * statistics.median(r["step_s"]) for r in timed],
                          "gflops": gflops, "percent_of_peak": 100 * gflops / peak_gflops,
                          "times_floor": 1e3 * median / floor, "first_loss": timed[0]["first_loss"]}
        if framework == "compile":
            out[framework]["compile_s"] = [r["compile_s"] for r in timed]
    if "explorer" in out:
        out["floor_share_reached"] = floor / out["explorer"]["median_ms"]
        for other, key in (("torch", "ratio_explorer_over_torch"), ("compile", "ratio_explorer_over_compile")):
            if other in out:
                out[key] = out["explorer"]["median_ms"] / out[other]["median_ms"]
        for framework in out:
            if framework.startswith("explorer:"):
                out[framework]["ratio_over_default"] = out[framework]["median_ms"] / out["explorer"]["median_ms"]
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
    level = cpu_level(cpu_flags())
    return {"cpu": cpu, "cpu_vector": LEVEL_NAMES.get(level, "unknown"), "cores": usable_cores(),
            "machine_cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__}
