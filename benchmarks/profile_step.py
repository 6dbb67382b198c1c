"""Where does explorer's training step spend its time? A per-kernel and per-op breakdown.

    python benchmarks/profile_step.py --configs tiny,small [--steps 5] [--json out.json]

It runs in its own process, re-started without the OpenBLAS pins when they are set.

Every kernel in the registry is swapped (with `kernels.use`) for a wrapper that times it,
then ordinary Trainer steps run. The model calls kernels in the order of `model.trace`, so
each timing is matched to the op that made it (e.g. `blocks.*.mlp.fc` matmul_forward, summed
over layers). What is left of the step (Python, the batch, the trace records) is "other".

AdamW is the exception: the Trainer keeps a rollback copy of all parameters whenever a
non-shipped adamw_update is registered, which a wrapper would trigger; so adamw_update is
timed separately, by calling the shipped kernel on buffers of the same size after the steps.
"""
import argparse
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import explorer  # noqa: E402  (first: sets thread settings before numpy loads)
from explorer import kernels  # noqa: E402
from explorer.lab.bench.blas import blas_pools, describe, rerun_unpinned  # noqa: E402
from explorer.lab.bench.configs import get_config  # noqa: E402
from explorer.lab.bench.report import write_json  # noqa: E402
from explorer.lab.bench.workers import make_trainer  # noqa: E402


def _timing_wrapper(name, fn, log):
    def timed(*args):
        t0 = time.perf_counter()
        result = fn(*args)
        log.append((name, time.perf_counter() - t0))
        return result
    return timed


def op_flops(record):
    """Multiply-add work of a matmul or attention op, from its tensors' shapes (else 0)."""
    ins, outs = record.inputs, record.outputs
    if record.kernel in ("matmul_forward", "matmul_backward"):
        weight = ins["weight"]
        rows = ins["inp"].size // weight.shape[1]
        per_product = 2 * rows * weight.shape[0] * weight.shape[1]
        return per_product * (1 if record.kernel == "matmul_forward" else 2)
    if record.kernel in ("attention_forward", "attention_backward"):
        B, NH, T, _ = (outs.get("att") if "att" in outs else ins["att"]).shape
        C = ins["qkv"].shape[-1] // 3
        per_product = 2 * B * T * T * C     # one (T x T) x (T x hs) product per head, full square
        return per_product * (2 if record.kernel == "attention_forward" else 4)
    return 0


def profile(config_name, steps=5, warmup=2):
    """Per-op and per-kernel milliseconds per step, averaged over `steps` timed steps."""
    cfg = get_config(config_name)
    trainer = make_trainer(cfg)
    for _ in range(warmup):
        trainer.step()
    plain = [trainer.step()["ms"] for _ in range(steps)]   # unwrapped, for comparison

    log = []
    wrapped = {n: _timing_wrapper(n, kernels.get(n), log) for n in kernels.names() if n != "adamw_update"}
    per_op, flops, step_ms = defaultdict(float), defaultdict(float), []
    with kernels.use(**wrapped):
        for _ in range(steps):
            log.clear()
            step_ms.append(trainer.step()["ms"])
            trace = trainer.model.trace
            if [r.kernel for r in trace] != [n for n, _ in log[:len(trace)]]:
                raise RuntimeError("kernel calls did not line up with model.trace; cannot attribute them")
            for record, (_, seconds) in zip(trace, log):
                key = (re.sub(r"blocks\.\d+\.", "blocks.*.", record.name), record.kernel)
                per_op[key] += seconds * 1e3 / steps
                flops[key] += op_flops(record) / steps
            for name, seconds in log[len(trace):]:       # grad_norm, called by the trainer
                per_op[("trainer", name)] += seconds * 1e3 / steps
    per_op[("trainer", "adamw_update")] = _time_adamw(trainer, steps)
    # the profiled steps ran the real adamw_update too: it is part of their time already
    return {"config": config_name, "plain_step_ms": statistics.median(plain),
            "profiled_step_ms": statistics.mean(step_ms),
            "ops": [{"op": op, "kernel": k, "ms": ms, "gflops": flops[(op, k)] / ms / 1e6 if flops[(op, k)] else None}
                    for (op, k), ms in per_op.items()]}


def _time_adamw(trainer, steps):
    """ms of the shipped adamw_update on scratch copies of the trainer's buffers."""
    model = trainer.model
    params, m, v = model.flat_params.copy(), trainer.m.copy(), trainer.v.copy()
    args = (params, model.flat_grads, m, v, trainer._segments, trainer._decay, 1, 1e-4, 0.9, 0.95,
            1e-8, 0.1, 1.0)
    fn = kernels.shipped("adamw_update")
    fn(*args)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def format_profile(result):
    total = result["profiled_step_ms"]
    kernel_ms = sum(o["ms"] for o in result["ops"])
    lines = [f"{result['config']}: step {result['plain_step_ms']:.1f} ms unwrapped, "
             f"{total:.1f} ms with timers; kernels {kernel_ms:.1f} ms, other {total - kernel_ms:.1f} ms",
             "", "  by kernel:", f"  {'kernel':32s} {'ms/step':>9s} {'share':>6s}"]
    by_kernel = defaultdict(float)
    for o in result["ops"]:
        by_kernel[o["kernel"]] += o["ms"]
    by_kernel["(other: Python, batch, trace)"] = total - kernel_ms
    for k, ms in sorted(by_kernel.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:32s} {ms:9.2f} {100 * ms / total:5.1f}%")
    lines += ["", "  by op (summed over layers):",
              f"  {'op':34s} {'kernel':30s} {'ms/step':>9s} {'share':>6s} {'GFLOP/s':>8s}"]
    for o in sorted(result["ops"], key=lambda o: -o["ms"]):
        rate = f"{o['gflops']:8.1f}" if o["gflops"] else " " * 8
        lines.append(f"  {o['op']:34s} {o['kernel']:30s} {o['ms']:9.2f} {100 * o['ms'] / total:5.1f}% {rate}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="tiny,small")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    code = rerun_unpinned()          # time with OpenBLAS as a user's machine picks it
    if code is not None:
        return code
    print(f"NumPy's BLAS: {describe(blas_pools())}\n", flush=True)
    results = []
    for name in a.configs.split(","):
        results.append(profile(name.strip(), a.steps, a.warmup))
        print(format_profile(results[-1]), "\n", flush=True)
    if a.json:
        write_json({"explorer": explorer.__version__, "profiles": results}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
