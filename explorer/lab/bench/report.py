"""The benchmark's results as a readable text table, and as a JSON file."""
import json
import os
import tempfile
from pathlib import Path


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
