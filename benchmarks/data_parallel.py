"""Data-parallel training on one machine: 1 rank x 2 threads against 2 ranks x 1 thread, the
gradient Allreduce's time and share of a step, and ZeRO-1's memory for AdamW's m and v.

    python benchmarks/data_parallel.py [small,124m] [steps] [rounds]

Every launch runs without the OpenBLAS pins (explorer/lab/bench/blas.py), as a user's machine.

Configs are `explorer bench`'s (explorer/lab/bench/configs.py: small L6 C384 B16 T256; 124m GPT-2's
shapes, B4 T64) on random tokens. Every run is a fresh launch (mpiexec for 2 ranks); rounds
alternate the two layouts and which goes first, so a slow spell of a shared machine hits both.
Results: benchmarks/README.md, "Data parallel".
"""
import explorer  # noqa: F401  (isort: skip)  first: it sets the thread pools' wait policy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from explorer.lab.bench.blas import unpinned_env
from explorer.lab.bench.configs import CONFIGS, RandomTokens
from explorer.lab.bench.workers import usable_cores
from explorer.train.distributed import mpiexec_command, world


def worker(config, threads, zero, warmup, steps, out):
    """Run under mpiexec (or alone): time `steps` steps after `warmup`; rank 0 writes JSON."""
    from threadpoolctl import threadpool_info

    from explorer import GPT, GPTConfig
    from explorer.train import Trainer
    cfg = CONFIGS[config]
    comm = world()
    model = GPT(GPTConfig(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.block_size))
    trainer = Trainer(model, RandomTokens(cfg.vocab_size, cfg.seq_len), batch_size=cfg.batch_size,
                      lr=1e-4, comm=comm, zero=zero)
    trainer.threads = threads
    for _ in range(warmup):
        trainer.step()
    rows = [trainer.step() for _ in range(steps)]
    mine = {"moment_bytes": trainer.m.nbytes + trainer.v.nbytes,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    ranks = comm.allgather(mine) if comm is not None else [mine]
    if comm is None or comm.Get_rank() == 0:
        blas = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')}"
                for p in threadpool_info() if p.get("user_api") == "blas"]
        result = {"step_ms": [r["ms"] for r in rows],
                  "allreduce_ms": [r.get("allreduce_ms", 0.0) for r in rows],
                  "ranks": ranks, "blas": blas, "params": model.num_params}
        with open(out, "w") as f:
            json.dump(result, f)


def launch(config, ranks, threads, zero, warmup, steps):
    env = unpinned_env()     # pinning OpenBLAS's kernel would hide what a user's machine picks
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        args = [os.path.abspath(__file__), "--worker", config, str(threads), str(zero),
                str(warmup), str(steps), out]
        command = (mpiexec_command(ranks) if ranks > 1 else [sys.executable]) + args
        subprocess.run(command, env=env, check=True, timeout=3600)
        with open(out) as f:
            return json.load(f)


def main(configs=("small", "124m"), steps=5, rounds=3):
    layouts = [(1, 2), (2, 1)]               # (ranks, threads each)
    report = {"cores": usable_cores(), "configs": {}}
    for config in configs:
        runs = {layout: [] for layout in layouts}
        for r in range(rounds):
            for ranks, threads in (layouts if r % 2 == 0 else layouts[::-1]):
                runs[ranks, threads].append(launch(config, ranks, threads, 0, 2, steps))
        zero = launch(config, 2, 1, 1, 1, 2)     # ZeRO-1 on 2 ranks: memory, and its step
        entry = {}
        for (ranks, threads), results in runs.items():
            step = statistics.median(ms for r in results for ms in r["step_ms"])
            reduce = statistics.median(ms for r in results for ms in r["allreduce_ms"])
            entry[f"{ranks}x{threads}"] = {
                "step_ms": step, "steps_per_s": 1000 / step, "allreduce_ms": reduce,
                "allreduce_share": reduce / step,
                "round_medians_ms": [statistics.median(r["step_ms"]) for r in results],
                "moment_bytes_per_rank": results[0]["ranks"][0]["moment_bytes"],
                "max_rss_mb": [x["max_rss_mb"] for x in results[0]["ranks"]]}
        entry["2x1 zero1"] = {"step_ms": statistics.median(zero["step_ms"]),
                              "moment_bytes_per_rank": [x["moment_bytes"] for x in zero["ranks"]],
                              "max_rss_mb": [x["max_rss_mb"] for x in zero["ranks"]]}
        entry["params"], entry["blas"] = zero["params"], zero["blas"]
        report["configs"][config] = entry
        print(json.dumps({config: entry}, indent=1), flush=True)
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        config, threads, zero, warmup, steps, out = sys.argv[2:8]
        worker(config, int(threads), int(zero), int(warmup), int(steps), out)
    else:
        configs = sys.argv[1].split(",") if len(sys.argv) > 1 else ("small", "124m")
        steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
        rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
        started = time.monotonic()
        main(configs, steps, rounds)
        print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)
