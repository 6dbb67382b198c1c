"""The benchmark's results as a readable text table, and as a JSON file."""
import json
import os
import tempfile
from pathlib import Path

from .blas import describe

#: The table's columns: (header, width, how to get the cell from a config's summary).
NAN = float("nan")
COLUMNS = (
    ("explorer ms", 11, lambda s: s.get("explorer", {}).get("median_ms", NAN)),
    ("eager ms", 9, lambda s: s.get("torch", {}).get("median_ms", NAN)),
    ("compile ms", 10, lambda s: s.get("compile", {}).get("median_ms", NAN)),
    ("ex/eager", 8, lambda s: s.get("ratio_explorer_over_torch", NAN)),
    ("ex/compile", 10, lambda s: s.get("ratio_explorer_over_compile", NAN)),
    ("floor ms", 9, lambda s: s["floor_ms"]),
    ("ex x floor", 10, lambda s: s.get("explorer", {}).get("times_floor", NAN)),
    ("floor share", 11, lambda s: s.get("floor_share_reached", NAN)),
)
#: Start-up targets (issue 18): import + first step with a warm Numba cache, and with an empty one.
STARTUP_GOALS_S = {"warm": 1.5, "cold": 20.0}


def format_report(report):
    """The report as a readable text table."""
    m, peak = report["machine"], report["gemm_peak"]
    lines = [f"explorer bench: {m['cpu']} ({m.get('cpu_vector', '?')}), {m['cores']} of {m['machine_cores']} cores "
             f"usable, Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}",
             f"NumPy's BLAS: {describe(report['blas'])}" if "blas" in report else "NumPy's BLAS: (not reported)",
             *report.get("warnings", []),
             "GEMM ceiling (float32 NumPy matmul, best of sizes "
             f"{', '.join(map(str, peak['measurements'][0]['by_size']))})"
             f": {peak['gflops']:.1f} GFLOP/s  (start {peak['measurements'][0]['gflops']:.1f}, "
             f"end {peak['measurements'][-1]['gflops']:.1f})",
             "load average (1 min) before / after: "
             f"{report['load_average_before'][0]:.2f} / {report['load_average_after'][0]:.2f}"]
    if report.get("torch_wait_policy"):
        lines.append(f"PyTorch's OpenMP wait policy: {report['torch_wait_policy']}")
    for key in ("torch_note", "compile_note"):
        if report.get(key):
            lines.append(f"NOTE: {report[key]}")
    lines += ["", f"{'config':11s} {'B x T':>8s} {'GEMM GFLOP':>10s} | "
              + " ".join(f"{h:>{w}s}" for h, w, _ in COLUMNS) + f" | {'compile s':>9s}"]
    for name, entry in report["configs"].items():
        s, c = entry["summary"], entry["config"]
        compile_s = s.get("compile", {}).get("compile_s")
        gemm_gflop = entry["gemm_flops_per_step"] / 1e9
        lines.append(f"{name:11s} {c['batch_size']:>3d} x {c['seq_len']:<4d} {gemm_gflop:10.2f} | "
                     + " ".join(f"{get(s):{w}.{1 if 'ms' in h else 2}f}" for h, w, get in COLUMNS)
                     + f" | {max(compile_s) if compile_s else NAN:9.1f}")
    lines += ["", "floor: the step's GEMM FLOPs at the GEMM ceiling (the fastest a step on this BLAS can be);",
              "floor share: floor / explorer's step; ex x floor: explorer's step / floor; ratios < 1: explorer faster;",
              "compile s: torch.compile's first step less an ordinary one (empty inductor cache), the slowest round."]
    lines += _failure_lines(report) + _variant_lines(report)
    lines += ["", "rounds (median ms per process, in run order):"]
    for name, entry in report["configs"].items():
        for framework, r in entry["summary"].items():
            if isinstance(r, dict):
                lines.append(f"  {name:11s} {framework:8s} " + "  ".join(f"{x:.1f}" for x in r["round_medians_ms"])
                             + f"   (fastest step {r['min_ms']:.1f} ms; first loss {r['first_loss']:.3f}"
                             + (f"; compile s {', '.join(f'{x:.1f}' for x in r['compile_s'])})" if "compile_s" in r
                                else ")"))
    lines += ["", "threads:"] + _thread_lines(report)
    if "startup" in report:
        lines += ["", "start-up (tiny config, fresh processes):"] + _startup_lines(report["startup"])
    if "startup_error" in report:
        lines += ["", f"start-up measurement failed: {report['startup_error']}"]
    return "\n".join(lines)


def _variant_lines(report):
    """The kernel versions the default explorer ran, and each variant timed beside it."""
    if "default_kernels" not in report:
        return []
    lines = ["", "explorer's default kernels (shipped; each variant below ran in the same rounds): "
             + ", ".join(f"{k}={v}" for k, v in report["default_kernels"].items())]
    for name, entry in report["configs"].items():
        for framework, r in entry["summary"].items():
            if framework.startswith("explorer:"):
                verdict = "faster" if r["ratio_over_default"] < 1 else "not faster"
                lines.append(f"  {name:11s} {framework.split(':', 1)[1]}: {r['median_ms']:.1f} ms = "
                             f"{r['ratio_over_default']:.2f} x the default ({verdict})")
    return lines


def _failure_lines(report):
    lines = []
    for name, entry in report["configs"].items():
        s = entry["summary"]
        if "compile_error" in s:
            after = ", ".join(f"{x:.1f}" for x in s["compile_failed_after_s"])
            lines.append(f"torch.compile FAILED on {name} (after {after} s): {s['compile_error'][:500]}")
    return [""] + lines if lines else []


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
                             f"BLAS {describe(info['blas'])}; env {info['env']}")
            elif framework in ("torch", "compile"):
                lines.append(f"  {framework:8s} torch {info['torch_version']}: {info['torch_threads']} threads "
                             f"(interop {info['interop_threads']}), CPU kernels {info['torch_cpu_capability']}, "
                             f"BLAS {info['torch_blas']}; env {info['env']}")
    return lines


def _startup_lines(startup):
    lines = []
    for kind, r in startup.items():
        goal = STARTUP_GOALS_S.get(kind)
        verdict = ("" if goal is None else
                   f"  [goal <= {goal:g} s: {'met' if r['import_and_first_step_s'] <= goal else 'NOT met'}]")
        lines.append(f"  {kind:4s} cache: import explorer {r['import_s']:.2f} s + first step {r['first_step_s']:.2f} s"
                     f" = {r['import_and_first_step_s']:.2f} s (Python's own start adds "
                     f"{r['process_s'] - r['whole_worker_s']:.2f} s){verdict}")
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
