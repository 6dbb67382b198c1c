"""The `explorer` command line: train writes a complete run folder; sample reads it back."""
import json
import os

import numpy as np
import pytest

import explorer
from explorer.cli import main


def test_train_writes_a_run_folder_and_sample_reads_it(tmp_path, capsys):
    assert main(["train", "--preset", "reverse-tiny", "--steps", "4", "--out", str(tmp_path),
                 "--quiet", "--sample-every", "2"]) == 0
    (folder,) = tmp_path.iterdir()
    assert sorted(os.listdir(folder)) == ["checkpoint.safetensors", "config.json", "metrics.jsonl",
                                          "samples.txt"]
    rows = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in steps)
    assert any("val_loss" in r and "accuracy" in r for r in rows)
    config = json.loads((folder / "config.json").read_text())
    assert config["preset"] == "reverse-tiny" and config["steps"] == 4
    assert (folder / "samples.txt").read_text().count("--- step") == 2

    ckpt = explorer.load(folder / "checkpoint.safetensors")
    assert ckpt.step == 4 and ckpt.tokenizer is not None
    assert ckpt.model.config.to_dict() == config["model"]

    capsys.readouterr()
    assert main(["sample", str(folder / "checkpoint.safetensors"), "--prompt", "1234",
                 "--tokens", "5", "--seed", "0"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("1234") and len(text) == 9
    # the run folder that train printed works too, and samples the same checkpoint
    assert main(["sample", str(folder), "--prompt", "1234", "--tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip() == text
    # a folder without a checkpoint is still a clear error
    assert main(["sample", str(tmp_path)]) == 2
    assert "is a folder, expected a .safetensors file" in capsys.readouterr().err


def test_unknown_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no preset named 'nope'" in err and "reverse-tiny" in err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_presets_are_listed(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "reverse-tiny" in out and "shakespeare-char" in out


def test_train_threads_option(tmp_path, capsys):
    """auto (the default) records the count each step used; a number fixes it; a count the
    machine does not have is refused before anything is written."""
    from explorer.kernels.runtime import max_threads
    from explorer.train.thread_tuner import ThreadTuner
    assert main(["train", "--steps", "3", "--out", str(tmp_path / "auto"), "--quiet"]) == 0
    (folder,) = (tmp_path / "auto").iterdir()
    rows = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    tried_in_turns = (ThreadTuner().candidates * 3)[:3]
    assert [r["threads"] for r in rows if "loss" in r] == tried_in_turns
    assert main(["train", "--steps", "2", "--out", str(tmp_path / "one"), "--quiet",
                 "--threads", "1"]) == 0
    (folder,) = (tmp_path / "one").iterdir()
    assert {json.loads(line).get("threads", 1) for line in open(folder / "metrics.jsonl")} == {1}
    capsys.readouterr()
    too_many = str(max_threads() + 1)
    assert main(["train", "--out", str(tmp_path / "bad"), "--threads", too_many]) == 2
    assert f"got {too_many}" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["train", "--threads", "many"])
    assert 'expected a number >= 1, "all" or "auto"' in capsys.readouterr().err
