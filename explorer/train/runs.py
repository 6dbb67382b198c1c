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

from ..io.checkpoint import atomic_write, load, save
from .distributed import DEFAULT_TIMEOUT_S
from .trainer import interrupts_deferred


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


CHECKPOINT = "checkpoint.safetensors"
SAVE_SECONDS = 60.0      # without --save-every, a checkpoint about once a minute


def sample_checkpoint(path, prompt="", tokens=200, temperature=0.8, top_k=None, seed=None):
    """path: a checkpoint.safetensors, or the run folder `explorer train` printed (holding one)."""
    from ..tokenizers import tokenizer_from_dict
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")) \
            and not os.path.isfile(os.path.join(path, CHECKPOINT)):
        raise FileNotFoundError(f"the run folder {path} has no checkpoint yet: a run writes "
                                f"{CHECKPOINT} every --save-every steps (by default about every "
                                f"{SAVE_SECONDS:.0f} s) and when it ends")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CHECKPOINT)):
        path = os.path.join(path, CHECKPOINT)
    ckpt = load(path)
    tokenizer = tokenizer_from_dict(ckpt.tokenizer) if ckpt.tokenizer else None
    return sample_text(ckpt.model, tokenizer, prompt, tokens, temperature, top_k, seed)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped train_preset between two steps; the run was saved and can resume."""
    def __init__(self, folder, step):
        super().__init__(f"interrupted at step {step}")
        self.folder, self.step = folder, step


def _run_folder(out, name):
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; expected a folder to create the run folder in")
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


class _AppendLog:
    """A line-per-record log. Each record is one write() of a whole line to a file opened
    for appending, so a killed process leaves whole lines behind, never half of one."""
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, text):
        os.write(self.fd, text.encode("utf-8"))

    def close(self):
        os.close(self.fd)


def _keep_until(folder, step):
    """Cut metrics.jsonl and samples.txt back to what a run had logged when it reached
    `step` (a resumed run logs the later steps again, as they were)."""
    metrics = os.path.join(folder, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as f:
            rows = [line for line in f if line.endswith("\n") and _row_step(line) <= step]
        atomic_write(metrics, lambda tmp: open(tmp, "w", encoding="utf-8").writelines(rows))
    samples = os.path.join(folder, "samples.txt")
    if os.path.exists(samples):
        with open(samples, encoding="utf-8") as f:
            text = f.read()
        kept = []
        for section in text.split("--- step ")[1:]:
            if int(section.split("\n", 1)[0]) <= step and section.endswith("\n"):
                kept.append("--- step " + section)
        atomic_write(samples, lambda tmp: open(tmp, "w", encoding="utf-8").write("".join(kept)))


def _row_step(line):
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")     # not a whole record: drop it


def train_preset(name=None, steps=None, out="runs", seed=0, sample_every=None, progress=True,
                 threads="auto", save_every=None, resume=None, comm="auto", zero=0,
                 rank_timeout=DEFAULT_TIMEOUT_S):
    """Train preset `name` for `steps` steps; returns (trainer, run folder). threads: None
    (all), a number, or "auto" (chosen by timing steps: explorer/train/thread_tuner.py).

    A checkpoint is written every `save_every` steps (None: about every SAVE_SECONDS), after
    the step's evaluation, and at the end. resume: a run folder; the run continues from its
    checkpoint with the preset, seed and settings it was started with (`steps` may give a
    new total), and logs exactly what it would have logged had it never stopped.

    Started by mpiexec (comm="auto"), or given an MPI communicator, the run is data-parallel
    (explorer/train/distributed.py): every rank trains, and rank 0 alone writes the run folder,
    the logs, the progress bar and the checkpoints. zero=1 shards the optimizer state; a run
    resumes with any number of ranks. threads="auto" then gives each rank its share of its
    machine's cores (a rank's step time includes waiting for the others: timing cannot choose)."""
    from tqdm.auto import tqdm

    from .presets import get_preset
    for flag, value in (("--steps", steps), ("--sample-every", sample_every),
                        ("--save-every", save_every)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
    if resume is not None:
        folder = os.fspath(resume)
        settings = _read_run_settings(folder)
        name, seed = settings["preset"], settings["seed"]
        steps = steps if steps is not None else settings["steps"]
        sample_every = settings["sample_every"]
        save_every = save_every if save_every is not None else settings.get("save_every")
    preset = get_preset(name)
    steps = steps if steps is not None else preset.steps
    sample_every = sample_every if sample_every is not None else max(1, steps // 4)
    data, model, trainer = preset.build(seed=seed, comm=comm, zero=zero, rank_timeout=rank_timeout)
    dp = trainer.distributed
    root = dp is None or dp.rank == 0
    progress = progress and root
    trainer.threads = dp.default_threads() if dp is not None and threads == "auto" else threads
    if resume is not None:
        load(os.path.join(folder, CHECKPOINT)).restore(trainer)   # every rank reads it
        if trainer.step_count >= steps:   # killed after its last save: nothing is missing
            if progress:
                print(f"the run in {folder} is complete ({trainer.step_count} of {steps} "
                      f"steps); give a larger --steps to train it further")
                print(f"run folder: {folder}")
            return trainer, folder
    logs = {}

    def open_run():         # rank 0's: if it fails, every rank hears of it
        run = folder if resume is not None else _run_folder(out, name)
        if resume is not None:
            _keep_until(run, trainer.step_count)
        _write_json(os.path.join(run, "config.json"),
                    {"preset": name, "seed": seed, "steps": steps, "sample_every": sample_every,
                     "save_every": save_every, "model": model.config.to_dict(),
                     "train": asdict(trainer.config), "data": preset.data,
                     "description": data.describe(), "ranks": dp.size if dp else 1,
                     "zero": zero})
        logs["metrics"] = _AppendLog(os.path.join(run, "metrics.jsonl"))
        logs["samples"] = _AppendLog(os.path.join(run, "samples.txt"))
        return run

    folder = open_run() if dp is None else dp.run_on_root(open_run, "opening the run folder")
    ranks = _describe_ranks(trainer, zero) if dp is not None else None   # all ranks take part
    if progress and ranks:
        print(ranks)
    bar = tqdm(total=steps, initial=trainer.step_count, disable=not progress, unit="step",
               dynamic_ncols=True)
    tokenizer = getattr(data, "tokenizer", None)
    ckpt_path = os.path.join(folder, CHECKPOINT)

    def log(row):
        logs["metrics"].write(json.dumps(row) + "\n")

    def on_step(m):
        log(m)
        bar.update(1)
        bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}")
        if m["step"] % sample_every == 0 or m["step"] == steps:
            text = _sample_for_log(trainer, preset, tokenizer)
            logs["samples"].write(f"--- step {m['step']}\n{text}\n")
            if progress:
                bar.write(f"[step {m['step']}] {text}")

    def on_eval(m):
        log(m)
        if progress:
            bar.write("[eval] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in m.items()))

    if root:
        trainer.on("step", on_step)
        trainer.on("eval", on_eval)
    saved = {"step": trainer.step_count if resume is not None else None, "at": time.monotonic()}

    def checkpoint():
        if dp is None:
            save(trainer, ckpt_path, tokenizer=tokenizer)
        else:
            _save_from_rank_0(trainer, ckpt_path, tokenizer)
        saved.update(step=trainer.step_count, at=time.monotonic())

    stop = False
    try:
        # Ctrl-C waits for the step in progress, its evaluation and its checkpoint; every
        # rank of a distributed run then stops after the same step
        with interrupts_deferred() as caught:
            while trainer.step_count < steps and not stop:
                trainer.step()
                every = trainer.config.eval_interval
                if every and trainer.step_count % every == 0:
                    trainer.evaluate()
                due = trainer.step_count < steps and (
                    trainer.step_count % save_every == 0 if save_every
                    else time.monotonic() - saved["at"] >= SAVE_SECONDS)
                noticed = len(caught)   # one that comes during the exchange waits for the next
                stop = noticed > 0
                if dp is not None:   # rank 0's clock times the saves; anyone's Ctrl-C stops all
                    flags = dp.exchange([due, stop], None, f"after step {trainer.step_count}")
                    due, stop = bool(flags[0, 0]), bool(flags[:, 1].any())
                del caught[:noticed]
                if due or stop:
                    checkpoint()
            if not stop:
                trainer.evaluate()
                checkpoint()        # at the last step: a resume finds the run complete
    except KeyboardInterrupt:       # raised mid-step by a program's own SIGINT handler
        # steps are atomic, so the trainer is at a whole step: keep it
        bar.close()
        if saved["step"] != trainer.step_count:
            checkpoint()
        raise RunInterrupted(folder, trainer.step_count) from None
    finally:
        bar.close()
        for file in logs.values():
            file.close()
    if stop:
        raise RunInterrupted(folder, trainer.step_count)
    if progress:
        print(f"run folder: {folder}")
    return trainer, folder


class _Gathered:
    """A trainer's checkpoint state taken already (under ZeRO-1 the shards were gathered on
    every rank's call), for rank 0 to save alone."""
    def __init__(self, model, arrays, meta):
        self.model, self._state = model, (arrays, meta)

    def checkpoint_state(self):
        return self._state


def _save_from_rank_0(trainer, path, tokenizer):
    """Every rank calls it; rank 0 writes the checkpoint (atomically, as save() always does),
    with the optimizer's shards gathered. Every rank learns whether the write succeeded."""
    dp, model = trainer.distributed, trainer.model
    arrays, meta = trainer.checkpoint_state()
    dp.check_replicas(model.flat_params, "parameters")
    dp.run_on_root(lambda: save(_Gathered(model, arrays, meta), path, tokenizer=tokenizer),
                   f"saving the checkpoint at step {trainer.step_count}")


def _describe_ranks(trainer, zero):
    dp = trainer.distributed
    pids = dp.exchange([os.getpid()], None, "listing the ranks")[:, 0].astype(int)
    threads = trainer.threads
    return (f"data-parallel on {dp.size} ranks ({dp.local_size} on this machine), "
            f"{threads} thread{'s' if threads != 1 else ''} each"
            f"{', ZeRO-1 (m and v sharded)' if zero else ''}; process ids by rank: "
            + ", ".join(str(pid) for pid in pids))


def _read_run_settings(folder):
    config_path = os.path.join(folder, "config.json")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--resume {folder}: no such run folder")
    if not os.path.isfile(config_path):
        raise ValueError(f"--resume {folder}: not a run folder (it has no config.json); expected "
                         f"a folder that `explorer train` created")
    if not os.path.isfile(os.path.join(folder, CHECKPOINT)):
        raise ValueError(f"--resume {folder}: the run has no checkpoint yet, so there is nothing "
                         f"to resume; start it again with explorer train")
    try:
        with open(config_path, encoding="utf-8") as f:
            settings = json.load(f)
        settings = {k: settings[k] for k in ("preset", "seed", "steps", "sample_every")} | \
            {"save_every": settings.get("save_every")}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--resume {folder}: its config.json is not one explorer train wrote "
                         f"({err!r})") from None
    return settings


def _sample_for_log(trainer, preset, tokenizer):
    """A short sample: a task example's answer for toy tasks, a text continuation otherwise."""
    data = trainer.data
    rng = np.random.default_rng(trainer.step_count)   # not the trainer's: keep runs reproducible
    if getattr(data, "seq_len", None) and hasattr(data, "sample"):
        return task_example(trainer.model, data, rng)
    prompt = preset.sample_prompt
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


def read_metrics(folder):
    """The training steps' rows of a run folder's metrics.jsonl (not the evaluations')."""
    with open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.endswith("\n")]
    return [row for row in rows if "loss" in row]


def train_on_ranks(ranks, *args, timeout=600):
    """Run `explorer train *args` as `ranks` processes under mpiexec (one process, without
    mpiexec, for ranks=1), as from a terminal; returns the run folder it printed.

        folder = train_on_ranks(2, "--preset", "reverse-tiny", "--steps", "30", "--zero", "1")"""
    import subprocess
    import sys

    from .distributed import mpiexec_command
    start = mpiexec_command(ranks) if ranks > 1 else [sys.executable]
    done = subprocess.run(start + ["-m", "explorer", "train", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    folders = [line.split("run folder: ", 1)[1] for line in done.stdout.splitlines()
               if line.startswith("run folder: ")]
    if done.returncode != 0 or not folders:
        raise RuntimeError(f"explorer train on {ranks} rank(s) exited with status "
                           f"{done.returncode}; its last words:\n{done.stderr[-2000:]}")
    return folders[-1]
