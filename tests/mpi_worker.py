"""What tests/test_distributed.py runs under a real `mpiexec -n N`: one scenario per call,
rank 0 writing what it saw to a JSON file for the test to check.

    mpiexec -n 2 python tests/mpi_worker.py equal OUT.json [STEPS]
    mpiexec -n 2 python tests/mpi_worker.py raises OUT.json
    mpiexec -disable-auto-cleanup -n 3 python tests/mpi_worker.py dies OUT.json

`build` is also what the test trains in one process, for the reference numbers.
"""
import explorer  # noqa: F401  (isort: skip)  first: it sets the thread pools' wait policy
import json
import os
import sys
import time

import numpy as np

from explorer import GPT, GPTConfig
from explorer.data import make_task
from explorer.train import Trainer

#: The repeat task's answers have 4 to 8 tokens and its prompts none that count (-1), so rows
#: carry different numbers of counted targets: the global mean is not a mean of rank means;
#: 10 rows split 3, 3, 4 over three ranks.
#: Weight decay, clipping (the norm starts above 0.5) and warmup exercise every part of AdamW.
SETTINGS = dict(batch_size=10, lr=3e-3, weight_decay=0.1, grad_clip=0.5, warmup_steps=5,
                max_steps=60, seed=3)


def build(comm, zero=0, rank_timeout=60.0):
    """A small GPT on the repeat task (ignored targets, rows of unequal weight), one thread."""
    data = make_task("repeat", min_length=4, max_length=8)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=data.vocab_size,
                          block_size=17), seed=3)
    trainer = Trainer(model, data, comm=comm, zero=zero, rank_timeout=rank_timeout, **SETTINGS)
    trainer.threads = 1
    return trainer


def trajectory(trainer, steps):
    """Every step's loss and gradient norm, then a validation loss."""
    rows = [trainer.step() for _ in range(steps)]
    return {"loss": [r["loss"] for r in rows], "grad_norm": [r["grad_norm"] for r in rows],
            "val_loss": trainer.evaluate(2)["val_loss"]}


def equal(comm, out, steps):
    """50 steps with every rank holding m and v, then 50 with ZeRO-1; what each rank keeps."""
    result = {"ranks": comm.Get_size()}
    for zero in (0, 1):
        trainer = build(comm, zero)
        result[f"zero{zero}"] = trajectory(trainer, steps)
        result[f"zero{zero}"]["moment_bytes"] = comm.allgather(trainer.m.nbytes + trainer.v.nbytes)
        params = comm.allgather(trainer.model.flat_params.tobytes())
        result[f"zero{zero}"]["replicas_equal"] = all(p == params[0] for p in params)
        if comm.Get_rank() == 0:
            np.save(out + f".zero{zero}.npy", trainer.model.flat_params)
    _write(comm, out, result)


def raises(comm, out):
    """Rank 1's data raises during step 3: every rank must raise one RankError naming rank 1,
    leave its state as it was, and then go on training together."""
    trainer = build(comm)
    for _ in range(2):
        trainer.step()
    get_batch = trainer.data.get_batch
    if comm.Get_rank() == 1:
        def broken(*args):
            raise ValueError("a corrupt shard on rank 1")
        trainer.data.get_batch = broken
    before = (trainer.model.flat_params.copy(), trainer.m.copy(), trainer.v.copy(),
              trainer.step_count, trainer.rng.bit_generator.state)
    result = {}
    try:
        trainer.step()
    except Exception as err:
        result.update(error=type(err).__name__, message=str(err),
                      ranks=getattr(err, "ranks", None), agreed=getattr(err, "agreed", None))
    after = (trainer.model.flat_params, trainer.m, trainer.v, trainer.step_count,
             trainer.rng.bit_generator.state)
    same = all(np.array_equal(a, b) for a, b in zip(before[:3], after[:3]))
    result["unchanged"] = comm.allgather(bool(same and before[3:] == after[3:]))
    trainer.data.get_batch = get_batch
    result["next_step"] = trainer.step()["step"]     # the group is still whole
    result["errors"] = comm.allgather(result.get("message"))
    _write(comm, out, result)


def dies(comm, out):
    """Rank 1 ends abruptly during step 3; with the launcher told not to clean up, the others
    must stop by themselves, within about two rank timeouts, naming rank 1."""
    trainer = build(comm, rank_timeout=2.0)
    for _ in range(2):
        trainer.step()
    if comm.Get_rank() == 1:
        os._exit(9)
    started = time.monotonic()
    result = {"rank": comm.Get_rank()}
    try:
        trainer.step()
    except Exception as err:
        result.update(error=type(err).__name__, message=str(err),
                      ranks=getattr(err, "ranks", None), agreed=getattr(err, "agreed", None))
    result["seconds"] = time.monotonic() - started
    # no collective is possible now: each survivor writes its own file, then leaves at once
    # (MPI_Finalize would wait for the dead rank)
    with open(f"{out}.rank{comm.Get_rank()}", "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)


def _write(comm, out, result):
    if comm.Get_rank() == 0:
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    from mpi4py import MPI
    scenario, out = sys.argv[1], sys.argv[2]
    if scenario == "equal":
        equal(MPI.COMM_WORLD, out, int(sys.argv[3]) if len(sys.argv) > 3 else 50)
    elif scenario == "raises":
        raises(MPI.COMM_WORLD, out)
    elif scenario == "dies":
        dies(MPI.COMM_WORLD, out)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}; expected equal, raises or dies")
