"""The benchmark harness runs end to end and reports sane numbers (no timing assertions:
a test machine's speed proves nothing; `explorer bench` is where speed is measured)."""
import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import explorer
from explorer import GPT, GPTConfig
from explorer.lab.bench import cli, configs, launch, runner
from explorer.lab.bench import report as bench_report

ROOT = Path(__file__).resolve().parent.parent
# a model small enough that each worker process is mostly Python start-up
MICRO = configs.BenchConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=37, block_size=8,
                            batch_size=2, seq_len=8, warmup=1, steps=2)
HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_param_count_matches_the_model_and_gpt2():
    cfg = configs.get_config("tiny")
    model = GPT(GPTConfig(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.block_size))
    assert configs.count_params(cfg) == model.num_parameters(exclude_position_embedding=True)
    assert configs.count_params(cfg, exclude_position_embedding=False) == model.num_params
    # GPT-2 124M has 124,439,808 parameters, 1024 * 768 of them in the position table
    assert configs.count_params(configs.get_config("gpt2-124M")) == 124_439_808 - 1024 * 768


def test_step_flops_formula():
    cfg = configs.get_config("small")
    N, B, T, L, C = configs.count_params(cfg), 16, 256, 6, 384
    assert configs.step_flops(cfg) == 6 * N * B * T + 12 * L * C * T * B * T


def test_unknown_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown bench config 'huge'.*tiny, small, 124m"):
        configs.get_config("huge")


def test_random_tokens_batches():
    x, y = configs.RandomTokens(37, 8).get_batch("train", 3, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (3, 8) and x.dtype == y.dtype == np.int64
    assert x.min() >= 0 and y.max() < 37
    assert (x[:, 1:] == y[:, :-1]).all()          # targets are the inputs shifted by one


def _check_runs(summary, flops):
    for framework in ("explorer", "torch") if HAS_TORCH else ("explorer",):
        s = summary[framework]
        assert 0 < s["min_ms"] <= s["median_ms"] < 60_000
        assert math.isclose(s["gflops"], flops / (s["median_ms"] / 1e3) / 1e9)
        assert 0 < s["percent_of_peak"]
        # random tokens: the first loss of a fresh GPT-2 init is close to ln(V)
        assert abs(s["first_loss"] - math.log(MICRO.vocab_size)) < 0.3, s["first_loss"]


def test_run_bench_on_a_micro_config(monkeypatch):
    monkeypatch.setitem(configs.CONFIGS, "micro", MICRO)   # workers receive the config itself
    lines = []
    report = runner.run_bench(["micro"], rounds=1, compile=False, startup=False, gemm_sizes=(128,),
                              log=lines.append)
    entry = report["configs"]["micro"]
    _check_runs(entry["summary"], entry["flops_per_step"])
    assert len(entry["runs"]["explorer"][0]["step_s"]) == MICRO.steps
    info = entry["runs"]["explorer"][0]
    assert info["numba_threading_layer"] in ("omp", "tbb", "workqueue")
    assert info["numba_threads"] >= 1 and info["env"]["OMP_WAIT_POLICY"]
    assert report["gemm_peak"]["gflops"] > 0
    if HAS_TORCH:
        assert report["torch_note"] is None
        assert entry["summary"]["ratio_explorer_over_torch"] > 0
        # PyTorch runs with its own defaults, not explorer's thread settings
        assert entry["runs"]["torch"][0]["env"]["OMP_WAIT_POLICY"] is None
        assert entry["runs"]["torch"][0]["env"]["OPENBLAS_THREAD_TIMEOUT"] is None
    text = bench_report.format_report(report)
    assert "micro" in text and "GFLOP/s" in text
    assert any("micro round 1/1 explorer" in line for line in lines)


def test_without_torch_the_bench_says_so_and_times_explorer(monkeypatch):
    monkeypatch.setattr(launch, "TORCH_SCRIPT", ROOT / "benchmarks" / "no_such_file.py")
    monkeypatch.setitem(configs.CONFIGS, "micro", MICRO)
    report = runner.run_bench(["micro"], rounds=1, compile=False, startup=False, gemm_sizes=(128,),
                              log=lambda s: None)
    assert "timing explorer alone" in report["torch_note"]
    assert report["configs"]["micro"]["runs"]["torch"] == []
    assert "NOTE: " in bench_report.format_report(report)


def test_workers_and_pytorch_are_found_from_the_package_files():
    """Workers get the folder holding this very explorer on their PYTHONPATH, and the
    PyTorch model is the checkout's benchmarks/torch_gpt2_bench.py (paths from launch.py's
    own place in the package: wrong if it moves without them)."""
    init = launch.PACKAGE_PARENT / "explorer" / "__init__.py"
    assert init.exists() and init.samefile(explorer.__file__), \
        f"workers' PYTHONPATH gets {launch.PACKAGE_PARENT}; expected the folder holding {explorer.__file__}"
    expected = ROOT / "benchmarks" / "torch_gpt2_bench.py"
    assert launch.TORCH_SCRIPT == expected, f"TORCH_SCRIPT is {launch.TORCH_SCRIPT}; expected {expected}"


def test_cli_writes_json(tmp_path):
    """The command line end to end, through the module's own entry point."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "explorer.lab.bench", "--configs", "tiny", "--rounds", "1",
                           "--steps", "1", "--warmup", "1", "--no-torch", "--no-startup", "--gemm-sizes", "256",
                           "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["configs"]["tiny"]["summary"]["explorer"]["median_ms"] > 0
    assert "tiny" in done.stdout and "explorer ms" in done.stdout


def test_cli_rejects_bad_options():
    with pytest.raises(SystemExit, match="--rounds must be at least 1, got 0"):
        cli.main_bench(["--rounds", "0"])
    with pytest.raises(SystemExit, match="unknown bench config 'nope'"):
        cli.main_bench(["--configs", "tiny,nope"])


def test_startup_measurement_with_the_current_cache():
    """Warm start and one kernel recompiled (the cold case takes ~20 s: left to the bench)."""
    r = launch.measure_startup(MICRO, cold=False)["warm"]
    assert 0 < r["import_s"] < r["import_and_first_step_s"] <= r["whole_worker_s"] < r["process_s"]
    assert r["recompile_s"] > 0 and r["step_with_new_kernel_s"] > 0
    assert "recompile one kernel" in "\n".join(bench_report._startup_lines({"warm": r}))


def test_profiler_attributes_every_kernel_call_to_an_op(monkeypatch):
    profile_step = _load_benchmark("profile_step")
    monkeypatch.setitem(configs.CONFIGS, "micro", MICRO)
    result = profile_step.profile("micro", steps=1, warmup=1)
    ops = {(o["op"], o["kernel"]): o for o in result["ops"]}
    # one entry per distinct op, layers folded together; trainer-level kernels too
    assert ("blocks.*.attn", "attention_forward") in ops
    assert ("lm_head.backward", "matmul_backward") in ops
    assert ("trainer", "adamw_update") in ops and ("trainer", "grad_norm") in ops
    assert all(o["ms"] >= 0 for o in result["ops"])
    assert ops[("blocks.*.mlp.fc", "matmul_forward")]["gflops"] > 0
    # the timed kernels ran inside the step's own timer (adamw_update is timed apart)
    inside = sum(o["ms"] for o in result["ops"] if o["kernel"] != "adamw_update")
    assert 0 < inside <= result["profiled_step_ms"]
    assert "other: Python" in profile_step.format_profile(result)
    # matmul work from shapes: forward 2*N*C*OC, backward twice that
    rec = type("R", (), {"kernel": "matmul_forward", "outputs": {},
                         "inputs": {"inp": np.zeros((2, 3, 4)), "weight": np.zeros((5, 4))}})
    assert profile_step.op_flops(rec) == 2 * 6 * 4 * 5


def _load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gemm_ceiling_times_exactly_the_steps_matrix_products():
    ceiling = _load_benchmark("gemm_ceiling")
    for cfg in (MICRO, configs.get_config("tiny"), configs.get_config("124m")):
        L, C, V, BT = cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.batch_size * cfg.seq_len
        work = sum(2 * m * k * n * count for _, m, k, n, _, count in ceiling.products(cfg))
        # 6 flops per weight per token: the weight matrices of every layer and the tied LM head
        assert work == 6 * BT * (L * 12 * C * C + V * C)
    # each layout computes left @ right, with the operand transposed as the kernels pass it
    rng = np.random.default_rng(0)
    libs = ["numpy"] + (["torch"] if HAS_TORCH else [])
    for lib in libs:
        for how, transposed in (("x@w.T", "right"), ("dy@w", None), ("dy.T@x", "left")):
            call, left, right, out = ceiling.operands(lib, 5, 3, 4, how, rng)
            call()
            left, right, out = (np.asarray(x) for x in (left, right, out))
            assert left.shape == (5, 3) and right.shape == (3, 4) and out.shape == (5, 4)
            np.testing.assert_allclose(out, left @ right, rtol=1e-5, atol=1e-6)
            for side, arr in (("left", left), ("right", right)):
                assert arr.flags.c_contiguous == (side != transposed), (lib, how, side)
    seconds = ceiling.worker("numpy", dataclasses.asdict(MICRO), repeats=2)
    assert set(seconds) == {p[0] for p in ceiling.products(MICRO)}
    assert all(s > 0 for s in seconds.values())
