"""The benchmark is honest: workers time without the OpenBLAS pins while the caller keeps them,
the FLOP floor counts the step's products as PyTorch's own counter does, the report shows every
column, and a pinned old kernel is called out. (No timings are asserted: see test_bench.py.)"""
import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explorer.lab.bench import blas, configs, gemm, launch, runner
from explorer.lab.bench import report as bench_report

ROOT = Path(__file__).resolve().parent.parent
MICRO = configs.BenchConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=37, block_size=8,
                            batch_size=2, seq_len=8, warmup=1, steps=2)
PINS = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
HAS_TORCH = importlib.util.find_spec("torch") is not None
ARCH_CODE = "import numpy, threadpoolctl; print([p.get('architecture') for p in threadpoolctl.threadpool_info()" \
            " if p.get('internal_api') == 'openblas'])"


def test_workers_run_unpinned_while_the_caller_keeps_its_pins(monkeypatch):
    for k, v in PINS.items():
        monkeypatch.setenv(k, v)
    result = launch.measure_gemm_peak((64,))
    assert result["blas"]["pins"] == {k: None for k in PINS}, result["blas"]
    assert {k: os.environ.get(k) for k in PINS} == PINS            # the caller's environment is untouched
    assert blas.unpinned_env().keys().isdisjoint(PINS) and os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    # the pin really selects the Haswell kernel in a child that keeps it: without the removal above,
    # the worker would have run it too (on an AVX-512 CPU, the unpinned kernel is newer)
    pinned = subprocess.run([sys.executable, "-c", ARCH_CODE], capture_output=True, text=True, check=True)
    arches = [p["architecture"] for p in result["blas"]["pools"] if p["library"] == "openblas"]
    if "['Haswell']" in pinned.stdout and "avx512f" in blas.cpu_flags():
        assert arches and "Haswell" not in arches, arches
    if HAS_TORCH:
        torch_result = launch.run_torch_worker(MICRO)
        assert all(torch_result["env"][k] is None for k in PINS), torch_result["env"]


def test_a_script_reruns_itself_without_the_pins(tmp_path, monkeypatch):
    script = tmp_path / "timed.py"
    script.write_text("import os, sys\nfrom explorer.lab.bench.blas import rerun_unpinned\n"
                      "code = rerun_unpinned()\n"
                      "if code is not None:\n    print('parent', os.environ.get('OPENBLAS_CORETYPE')); sys.exit(code)\n"
                      "print('timed', os.environ.get('OPENBLAS_CORETYPE'), os.environ.get('OPENBLAS_L2_SIZE'))\n")
    env = {**os.environ, **PINS, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["timed None None", "parent Haswell"], done.stdout
    assert "re-running without the OpenBLAS pins" in done.stderr


def _torch_model():
    spec = importlib.util.spec_from_file_location("torch_gpt2_bench", ROOT / "benchmarks" / "torch_gpt2_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
@pytest.mark.parametrize("name", ["micro", "tiny", "shakespeare"])
def test_gemm_flops_match_pytorchs_flop_counter(name):
    """Forward + loss + backward of the PyTorch model of the same config, counted by
    torch.utils.flop_counter (its matmul-like ops), equals gemm.gemm_flops exactly. Attention
    runs on the math backend, whose products the counter sees (CPU's flash kernel it does not)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = MICRO if name == "micro" else configs.get_config(name)
    bench = _torch_model()
    model = bench.GPT(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.block_size)
    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, cfg.vocab_size), x.reshape(-1)).backward()
    counted = counter.get_total_flops()
    assert counted == gemm.gemm_flops(cfg), (counted, gemm.gemm_flops(cfg), counter.get_flop_counts())
    # and the floor is that work at the ceiling
    assert math.isclose(gemm.floor_ms(cfg, 100.0), counted / 100e9 * 1e3)


def _fake_report(compile_fails=False):
    cfg = configs.get_config("tiny")
    run = lambda ms: {"step_s": [ms / 1e3] * 3, "first_loss": 4.2}  # noqa: E731
    compile_run = ({"compile_error": "InductorError: no C++ compiler", "compile_failed_after_s": 3.5}
                   if compile_fails else {**run(40.0), "compile_s": 61.0})
    unpinned = {"pools": [{"library": "openblas", "version": "0.3.31", "architecture": "SkylakeX", "threads": 2}],
                "pins": {k: None for k in PINS}}
    explorer_info = {"numba_threading_layer": "omp", "numba_threads": 2, "blas": unpinned, "env": {}}
    torch_info = {"torch_version": "2", "torch_threads": 2, "interop_threads": 2, "torch_cpu_capability": "AVX512",
                  "torch_blas": "mkl", "env": {}}
    entry = {"config": dataclasses.asdict(cfg),
             "flops_per_step": configs.step_flops(cfg), "gemm_flops_per_step": gemm.gemm_flops(cfg),
             "runs": {"explorer": [{**run(30.0), **explorer_info}], "torch": [{**run(60.0), **torch_info}],
                      "compile": [{**compile_run, **torch_info}]}}
    entry["summary"] = runner.summarize(entry, peak_gflops=400.0)
    return {"machine": {"cpu": "Test CPU", "cpu_vector": "AVX-512", "cores": 2, "machine_cores": 2,
                        "python": "3.11", "numpy": "2", "numba": "0.68"},
            "blas": unpinned, "warnings": [], "load_average_before": (1.0,), "load_average_after": (2.0,),
            "torch_note": None, "compile_note": None, "torch_wait_policy": "passive", "configs": {"tiny": entry},
            "gemm_peak": {"gflops": 400.0, "measurements": [{"gflops": 400.0, "by_size": {"1024": 400.0}}] * 2}}


def test_report_shows_every_column():
    report = _fake_report()
    s = report["configs"]["tiny"]["summary"]
    floor = gemm.gemm_flops(configs.get_config("tiny")) / 400e9 * 1e3
    assert math.isclose(s["floor_ms"], floor)
    assert math.isclose(s["ratio_explorer_over_torch"], 0.5) and math.isclose(s["ratio_explorer_over_compile"], 0.75)
    assert math.isclose(s["floor_share_reached"], floor / 30.0)
    assert math.isclose(s["explorer"]["times_floor"], 30.0 / floor)
    text = bench_report.format_report(report)
    header = next(line for line in text.splitlines() if line.startswith("config"))
    for title, _, _ in bench_report.COLUMNS:
        assert title in header, title
    assert "compile s" in header
    row = next(line for line in text.splitlines() if line.startswith("tiny "))
    cells = row.split("|")[1].split()
    assert cells == ["30.0", "60.0", "40.0", "0.50", "0.75", f"{floor:.1f}", f"{30 / floor:.2f}", f"{floor / 30:.2f}"]
    assert row.split("|")[2].split() == ["61.0"]
    assert "NumPy's BLAS: openblas 0.3.31 kernel SkylakeX x2; unpinned" in text
    assert "PyTorch's OpenMP wait policy: passive" in text
    assert "compile  torch 2: 2 threads (interop 2), CPU kernels AVX512, BLAS mkl" in text


def test_report_says_when_torch_compile_failed():
    text = bench_report.format_report(_fake_report(compile_fails=True))
    assert "torch.compile FAILED on tiny (after 3.5 s): InductorError: no C++ compiler" in text
    row = next(line for line in text.splitlines() if line.startswith("tiny "))
    assert row.split("|")[1].split()[2] == "nan"


def test_warning_fires_on_a_pinned_old_kernel(tmp_path):
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n")
    avx512 = blas.cpu_flags(str(flags))
    assert {"avx2", "avx512f"} <= avx512 and blas.cpu_level(avx512) == 4
    pinned = {"pools": [{"library": "openblas", "version": "0.3.31", "architecture": "Haswell", "threads": 2}],
              "pins": {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}}
    (warning,) = blas.kernel_warnings(pinned, avx512)
    assert "Haswell kernel (AVX2)" in warning and "supports AVX-512" in warning
    assert "OPENBLAS_CORETYPE=Haswell" in warning and "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in warning
    # no warning when the kernel fits the CPU, or the CPU or kernel is unknown
    assert blas.kernel_warnings(pinned, {"avx", "avx2", "fma"}) == []
    newest = {**pinned, "pools": [{**pinned["pools"][0], "architecture": "SkylakeX"}]}
    assert blas.kernel_warnings(newest, avx512) == []
    assert blas.kernel_warnings({**pinned, "pools": [{**pinned["pools"][0], "architecture": "Mystery"}]}, avx512) == []
    assert blas.kernel_warnings(pinned, set()) == []
    # an old kernel with no pin set is reported too, with that cause
    (unpinned,) = blas.kernel_warnings({**pinned, "pins": {k: None for k in PINS}}, avx512)
    assert "no pin is set" in unpinned
    assert blas.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_torch_compile_is_timed_apart_from_its_steps_or_its_failure_is_reported(monkeypatch):
    """The compiled worker reports compile time apart from warm steps; with no C++ compiler
    (CXX pointing nowhere) it reports what failed and after how long, instead of step times."""
    monkeypatch.setenv("CXX", "/no/such/c++")
    assert "no C++ compiler" in launch.compiler_missing()
    failed = launch.run_torch_worker(MICRO, compiled=True)
    assert "C++ compiler" in failed["compile_error"] and failed["compile_failed_after_s"] > 0
    assert "step_s" not in failed
    monkeypatch.delenv("CXX")
    if launch.compiler_missing():
        pytest.skip(launch.compiler_missing())
    done = launch.run_torch_worker(MICRO, compiled=True)
    assert done["compiled"] and len(done["step_s"]) == MICRO.steps
    assert done["compile_s"] > max(done["step_s"])        # compiling took longer than a warm step
    assert abs(done["first_loss"] - math.log(MICRO.vocab_size)) < 0.3


def test_torch_wait_policy_is_a_choice(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")      # as explorer's import sets it
    assert "OMP_WAIT_POLICY" not in launch.torch_env()    # PyTorch's own default
    assert launch.torch_env(wait_policy="passive")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert launch.torch_env("/tmp/x")["TORCHINDUCTOR_CACHE_DIR"] == "/tmp/x"
    with pytest.raises(ValueError, match="wait_policy must be 'pytorch' or 'passive', got 'spin'"):
        launch.torch_env(wait_policy="spin")


def test_matmul_backward2_passes_the_labs_check_and_uses_one_blas_thread(monkeypatch):
    """The numbered variant is checked by the kernel lab's own check (reference, gradients,
    races), and its weight-gradient product really runs with BLAS limited to one thread."""
    from threadpoolctl import threadpool_info

    from explorer import kernels
    from explorer.kernels import matmul
    from explorer.lab.check import check_kernel

    assert kernels.VARIANTS["matmul_backward"]["blas2"] is matmul.matmul_backward2
    report = check_kernel("matmul_backward", matmul.matmul_backward2, timing=False)
    assert report.passed, str(report)
    seen = []
    real = np.matmul

    def spying(a, b, out=None):
        seen.append(max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=None))
        return real(a, b, out=out)

    monkeypatch.setattr(matmul.np, "matmul", spying)
    rng = np.random.default_rng(0)
    inp, dout, w = (rng.standard_normal(s, dtype=np.float32) for s in ((2, 3, 4), (2, 3, 5), (5, 4)))
    dinp, dw, db = np.empty_like(inp), np.empty_like(w), np.empty(5, np.float32)
    matmul.matmul_backward2(dinp, dw, db, dout, inp, w)
    assert seen[1] == 1, seen                     # the weight gradient: one thread
    monkeypatch.setattr(matmul.np, "matmul", real)
    np.testing.assert_allclose(dw, dout.reshape(-1, 5).T @ inp.reshape(-1, 4), rtol=1e-5, atol=1e-6)


def test_bench_times_a_variant_beside_the_default(monkeypatch):
    monkeypatch.setitem(configs.CONFIGS, "micro", MICRO)
    report = runner.run_bench(["micro"], rounds=1, torch=False, startup=False, gemm_sizes=(64,),
                              variants=["matmul_backward=blas2"], log=lambda s: None)
    assert report["default_kernels"]["matmul_backward"] == "blas"
    run = report["configs"]["micro"]["runs"]["explorer:matmul_backward=blas2"][0]
    assert run["kernel_versions"]["matmul_backward"] == "blas2"
    text = bench_report.format_report(report)
    assert "explorer's default kernels (shipped" in text and "matmul_backward=blas2:" in text
    with pytest.raises(ValueError, match="no shipped variant; expected KERNEL=VARIANT"):
        runner.parse_variants(["matmul_backward=fast"])
