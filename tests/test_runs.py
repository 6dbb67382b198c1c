"""Run folders as `explorer train` writes them: every preset samples, evaluates and saves;
Ctrl-C saves and says how to resume; --resume continues bitwise; SIGKILL at any moment loses
at most the steps since the last checkpoint and never leaves half a file."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from notebook_helpers import kernel_env

import explorer
from explorer.cli import main
from explorer.train.presets import PRESETS
from explorer.train.runs import train_preset

TIMING = ("ms", "tokens_per_s", "threads")   # the only fields that differ between equal runs


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    """A few kB of play text in place of Tiny Shakespeare (the shakespeare-char preset)."""
    path = tmp_path / "small.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
                    "All:\nSpeak, speak.\n\n" * 60)
    monkeypatch.setenv("EXPLORER_SHAKESPEARE", str(path))
    return path


def run_folder(out):
    (folder,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return folder


def records(folder):
    """metrics.jsonl without the timing fields."""
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_samples_evaluates_and_saves(name, tmp_path, small_corpus):
    trainer, folder = train_preset(name, steps=2, out=tmp_path, sample_every=1, progress=False,
                                   threads=1)
    folder = Path(folder)
    samples = (folder / "samples.txt").read_text()
    assert samples.count("--- step ") == 2 and len(samples.split("\n")[1]) > 0
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert any("val_loss" in r and np.isfinite(r["val_loss"]) for r in rows)
    ckpt = explorer.load(folder / "checkpoint.safetensors")
    assert ckpt.step == 2
    np.testing.assert_array_equal(ckpt.model.flat_params, trainer.model.flat_params)
    assert main(["sample", str(folder), "--tokens", "3", "--seed", "0"]) == 0


def test_resume_continues_exactly(tmp_path):
    """6 steps in one go == Ctrl-C during step 3, then --resume: the same records, samples,
    parameters and optimizer state."""
    from explorer import kernels
    from explorer.train.runs import RunInterrupted
    options = dict(sample_every=2, save_every=5, progress=False, threads=1)
    _, whole = train_preset("reverse-tiny", steps=6, out=tmp_path / "whole", **options)
    shipped, calls = kernels.shipped("adamw_update"), []

    def adamw_with_ctrl_c_in_step_3(*args):
        shipped(*args)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with kernels.use(adamw_update=adamw_with_ctrl_c_in_step_3), \
            pytest.raises(RunInterrupted) as stop:
        train_preset("reverse-tiny", steps=6, out=tmp_path / "part", **options)
    assert stop.value.step == 3
    part = run_folder(tmp_path / "part")
    assert explorer.load(part / "checkpoint.safetensors").step == 3
    train_preset(resume=part, progress=False, threads=1)
    assert records(part) == records(whole)
    assert (part / "samples.txt").read_text() == (Path(whole) / "samples.txt").read_text()
    a, b = (explorer.load(Path(f) / "checkpoint.safetensors") for f in (whole, part))
    np.testing.assert_array_equal(a.model.flat_params, b.model.flat_params)
    np.testing.assert_array_equal(a.optimizer_arrays["adamw.v"], b.optimizer_arrays["adamw.v"])


# --------------------------------------------------------------------------- the command
@pytest.mark.parametrize("argv, message", [
    (["--sample-every", "0"], "argument --sample-every: expected an integer >= 1, got 0"),
    (["--steps", "-3"], "argument --steps: expected an integer >= 1, got -3"),
    (["--steps", "ten"], "argument --steps: expected an integer >= 1, got 'ten'"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--save-every", "0"], "argument --save-every: expected an integer >= 1, got 0"),
    (["--threads", "0"], 'argument --threads: expected a number >= 1, "all" or "auto", got'),
    (["--preset", "nope"], "no preset named 'nope'; available: reverse-tiny"),
    (["--resume", "nowhere"], "--resume nowhere: no such run folder"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_train_flags_are_one_line_and_exit_2(argv, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "explorer", "train", "--quiet", *argv],
                            capture_output=True, text=True, cwd=tmp_path, env=kernel_env())
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"explorer train: error: {message}"] or (
        len(result.stderr.splitlines()) == 1
        and result.stderr.startswith(f"explorer train: error: {message}")), result.stderr
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["train", "--steps", "1", "--quiet", "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == (f"explorer train: error: --out {tmp_path / 'afile'} "
                                               f"is a file; expected a folder to create the run "
                                               f"folder in")


def test_resume_refuses_settings_it_cannot_change(tmp_path, capsys):
    _, folder = train_preset("reverse-tiny", steps=2, out=tmp_path, progress=False, threads=1)
    assert main(["train", "--resume", folder, "--seed", "3"]) == 2
    assert "--seed cannot be changed on --resume" in capsys.readouterr().err
    assert main(["train", "--resume", folder]) == 0
    assert "is complete (2 of 2 steps); give a larger --steps" in capsys.readouterr().out
    assert main(["train", "--resume", folder, "--steps", "3", "--quiet"]) == 0
    assert explorer.load(Path(folder) / "checkpoint.safetensors").step == 3


def test_sample_a_run_without_a_checkpoint_says_so(tmp_path, capsys):
    folder = tmp_path / "reverse-tiny-1"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["sample", str(folder)]) == 2
    assert "has no checkpoint yet" in capsys.readouterr().err


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "explorer", "train", "--quiet", "--threads",
                             "1", *args], cwd=cwd, env=kernel_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ctrl_c_saves_prints_how_to_resume_and_exits_130(tmp_path, small_corpus):
    args = ["--preset", "shakespeare-char", "--steps", "400", "--save-every", "1000"]
    process = _start(args, tmp_path)
    metrics = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:   # wait until it is training
        found = list(tmp_path.glob("runs/*/metrics.jsonl"))
        if found and found[0].stat().st_size > 0:
            metrics = found[0]
            break
        time.sleep(0.1)
    assert metrics is not None, process.communicate()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    folder = metrics.parent
    assert process.returncode == 130, err
    assert "Traceback" not in err
    step = explorer.load(folder / "checkpoint.safetensors").step
    assert 1 <= step < 400
    assert err.strip() == (f"interrupted at step {step}; resume with: explorer train --resume "
                           f"{os.path.join('runs', folder.name)}")
    assert out.strip() == f"run folder: {os.path.join('runs', folder.name)}"
    assert [r["step"] for r in records(folder)] == list(range(1, step + 1))


# --------------------------------------------------------------------------- SIGKILL
KILLS = 100            # in all, over two lanes running side by side
KILL_STEPS = 16        # steps of each short run
KILL_ARGS = ["--preset", "repeat-tiny", "--steps", str(KILL_STEPS), "--save-every", "2",
             "--sample-every", "5"]


def _assert_whole_files(folder):
    """Every file of the run folder is whole: JSON that parses, lines that end, a checkpoint
    that loads (temporary files of a killed save may lie beside them until the next save)."""
    names = set(os.listdir(folder))
    if "config.json" in names:
        json.loads((folder / "config.json").read_text())
    if "metrics.jsonl" in names:
        text = (folder / "metrics.jsonl").read_text()
        assert text == "" or text.endswith("\n")
        [json.loads(line) for line in text.splitlines()]
    if "checkpoint.safetensors" in names:
        tmps = [n for n in names if n.endswith(".tmp")]
        explorer.load(folder / "checkpoint.safetensors")   # also clears stale .tmp files
        assert not (set(tmps) & set(os.listdir(folder)))


def _kill_lane(workdir, kills, reference, seed):
    """Start runs and SIGKILL them at random moments, each time resuming the run, until
    `kills` kills are done; every run that completes must equal the reference."""
    rng = random.Random(seed)
    done = {"kills": 0, "runs_completed": 0, "restarts": 0}
    full_s = reference["seconds"]
    while done["kills"] < kills:
        out = workdir / f"run{done['runs_completed']}-{done['restarts']}"
        folder, args = None, KILL_ARGS + ["--out", str(out)]
        while True:
            process = _start(args, workdir)
            try:
                process.wait(timeout=rng.uniform(0.1, full_s))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                done["kills"] += 1
                folders = list(out.glob("*")) if out.exists() else []
                if folders:
                    folder = folders[0]
                    _assert_whole_files(folder)
                if folder is None or not (folder / "checkpoint.safetensors").exists():
                    done["restarts"] += 1    # killed before its first checkpoint: start over
                    break
                args = ["--resume", str(folder)]
                continue
            assert process.returncode == 0, process.stderr.read()
            folder = folder or run_folder(out)
            assert records(folder) == reference["records"]
            assert (folder / "samples.txt").read_text() == reference["samples"]
            final = explorer.load(folder / "checkpoint.safetensors")
            np.testing.assert_array_equal(final.model.flat_params, reference["params"])
            assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
            done["runs_completed"] += 1
            break
    return done


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bitwise_equal(tmp_path):
    t0 = time.monotonic()
    process = _start(KILL_ARGS + ["--out", "reference"], tmp_path)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    seconds = time.monotonic() - t0
    folder = run_folder(tmp_path / "reference")
    reference = {"records": records(folder), "samples": (folder / "samples.txt").read_text(),
                 "params": explorer.load(folder / "checkpoint.safetensors").model.flat_params,
                 "seconds": seconds * 1.2}
    lanes = [tmp_path / "lane0", tmp_path / "lane1"]
    for lane in lanes:
        lane.mkdir()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_kill_lane, lanes, [KILLS // 2] * 2, [reference] * 2, [0, 1]))
    total = {k: sum(r[k] for r in results) for k in results[0]}
    print(f"SIGKILL test: {total} in {time.monotonic() - t0:.0f} s "
          f"(a whole run takes {seconds:.1f} s)")
    assert total["kills"] >= KILLS and total["runs_completed"] >= 1
