"""The benchmark: each config timed in rounds of alternating explorer and PyTorch processes,
between two measurements of the float32 GEMM peak, and summarised (report.py prints it)."""
import os
import statistics
import subprocess
from dataclasses import asdict

from .configs import BenchConfig, count_params, get_config, step_flops
from .launch import explorer_cmd, measure_gemm_peak, measure_startup, run_worker, torch_available, torch_cmd, torch_env
from .workers import usable_cores


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
                cmd, env = ((explorer_cmd("step", cfg), None) if framework == "explorer"
                            else (torch_cmd(cfg), torch_env()))
                result = run_worker(cmd, env=env)
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
