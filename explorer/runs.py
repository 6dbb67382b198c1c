"""Training runs as the CLI does them: a preset in, a run folder out.

A run folder holds:
    config.json          the preset, model config and training config
    metrics.jsonl        one JSON object per step (and per evaluation, with "val_loss")
    samples.txt          text generated along the way
    checkpoint.safetensors   model + optimizer state + tokenizer (explorer.load reads it)
"""
import json
import os
import time
from dataclasses import asdict

import numpy as np

from .checkpoint import atomic_write, load, save


def _encode_prompt(tokenizer, prompt, vocab_size):
    if tokenizer is None or not prompt:
        return np.zeros((1, 1), np.int64)   # token 0 as a neutral start
    ids = tokenizer.encode(prompt)
    return np.asarray(ids, np.int64)[None, :]


def sample_text(model, tokenizer, prompt="", tokens=200, temperature=0.8, top_k=None, seed=None):
    """Continue `prompt` by `tokens` tokens and return the decoded text (prompt included)."""
    idx = _encode_prompt(tokenizer, prompt, model.config.vocab_size)
    idx = idx[:, -model.config.block_size:]
    out = model.generate(idx, tokens, temperature=temperature, top_k=top_k, seed=seed)
    if tokenizer is None:
        return " ".join(map(str, out[0]))
    start = 0 if prompt else 1
    return tokenizer.decode(out[0, start:].tolist())


def sample_checkpoint(path, prompt="", tokens=200, temperature=0.8, top_k=None, seed=None):
    """path: a checkpoint.safetensors, or the run folder `explorer train` printed (holding one)."""
    from .tokenizers import tokenizer_from_dict
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "checkpoint.safetensors")):
        path = os.path.join(path, "checkpoint.safetensors")
    ckpt = load(path)
    tokenizer = tokenizer_from_dict(ckpt.tokenizer) if ckpt.tokenizer else None
    return sample_text(ckpt.model, tokenizer, prompt, tokens, temperature, top_k, seed)


def _run_folder(out, name):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = os.path.join(out, f"{name}-{stamp}")
    suffix = 1
    while os.path.exists(folder):
        suffix += 1
        folder = os.path.join(out, f"{name}-{stamp}-{suffix}")
    os.makedirs(folder)
    return folder


def _write_json(path, obj):
    def write(tmp_path):
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
    atomic_write(path, write)


def train_preset(name, steps=None, out="runs", seed=0, sample_every=None, progress=True, threads="auto"):
    """Train preset `name` for `steps` steps; returns (trainer, run folder). threads: None
    (all), a number, or "auto" (chosen by timing steps: explorer/threads.py)."""
    from tqdm.auto import tqdm

    from .presets import get_preset
    preset = get_preset(name)
    data, model, trainer = preset.build(seed=seed)
    trainer.threads = threads
    steps = steps if steps is not None else preset.steps
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    sample_every = sample_every if sample_every is not None else max(1, steps // 4)
    folder = _run_folder(out, name)
    _write_json(os.path.join(folder, "config.json"),
                {"preset": name, "seed": seed, "steps": steps, "model": model.config.to_dict(),
                 "train": asdict(trainer.config), "data": preset.data,
                 "description": data.describe()})
    metrics_file = open(os.path.join(folder, "metrics.jsonl"), "a", encoding="utf-8")
    samples_file = open(os.path.join(folder, "samples.txt"), "a", encoding="utf-8")
    bar = tqdm(total=steps, disable=not progress, unit="step", dynamic_ncols=True)
    tokenizer = getattr(data, "tokenizer", None)

    def log(row):
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()

    def on_step(m):
        log(m)
        bar.update(1)
        bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}")
        if m["step"] % sample_every == 0 or m["step"] == steps:
            text = _sample_for_log(trainer, preset, tokenizer)
            samples_file.write(f"--- step {m['step']}\n{text}\n")
            samples_file.flush()
            if progress:
                bar.write(f"[step {m['step']}] {text}")

    def on_eval(m):
        log(m)
        if progress:
            bar.write("[eval] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in m.items()))

    trainer.on("step", on_step)
    trainer.on("eval", on_eval)
    try:
        trainer.run(steps)
        trainer.evaluate()
    finally:
        bar.close()
        metrics_file.close()
        samples_file.close()
        save(trainer, os.path.join(folder, "checkpoint.safetensors"), tokenizer=tokenizer)
    if progress:
        print(f"run folder: {folder}")
    return trainer, folder


def _sample_for_log(trainer, preset, tokenizer):
    """A short sample: a task example's answer for toy tasks, a text continuation otherwise."""
    data = trainer.data
    rng = np.random.default_rng(trainer.step_count)   # not the trainer's: keep runs reproducible
    if getattr(data, "seq_len", None) and hasattr(data, "sample"):
        return task_example(trainer.model, data, rng)
    prompt = preset.extra.get("sample_prompt", "\n")
    return sample_text(trainer.model, tokenizer, prompt, tokens=80, temperature=0.8,
                       seed=trainer.step_count).replace("\n", " | ")


def task_example(model, task, rng):
    """One validation example: the prompt, the model's greedy answer, and whether it is right."""
    seqs, mask = task.sample(rng, 1, "val")
    start = int(np.argmax(mask[0]))          # first answer position
    answer = model.generate(seqs[:, :start], len(seqs[0]) - start, temperature=0)[0, start:]
    mark = "right" if np.array_equal(answer, seqs[0, start:]) else "wrong"
    decode = task.tokenizer.decode
    return f"{decode(seqs[0, :start].tolist())} -> {decode(answer.tolist())} ({mark})"
