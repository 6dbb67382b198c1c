"""PyTorch eager GPT-2, used only as the yardstick of `explorer bench`.

    python benchmarks/torch_gpt2_bench.py --n-layer 4 --n-head 4 --n-embd 128 \
        --vocab-size 65 --block-size 128 --batch-size 32 --seq-len 128 --warmup 3 --steps 10

With --compile the model is torch.compile'd (inductor, its default backend; the optimizer
stays eager); the first step, which compiles forward and backward, is timed apart as
`compile_s` and the warm-up steps follow, so compile time never enters a timed step. Inductor
writes C++ and needs a C compiler: when compiling fails, the result says so (`compile_error`,
and how long it took to fail) instead of step times.

It times the same training step as explorer's Trainer: forward, cross-entropy loss,
backward, clip_grad_norm_(1.0), AdamW (decay on 2-D weights only), on uniformly random
tokens, with as many threads as the process may use cores. It prints one line
`BENCH_RESULT {json}` at the end. It deliberately does not import explorer, so explorer's
thread settings do not leak into PyTorch's process; `explorer bench` starts it with only the
OpenMP wait policy explorer uses (explorer/lab/bench/launch.py, torch_env, says why).

The model is GPT-2's architecture written the usual PyTorch way: learned positions,
pre-LN blocks, fused q/k/v projection, F.scaled_dot_product_attention(is_causal=True),
GELU (tanh), final layernorm, LM head tied to the token embedding.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

RESULT_MARK = "BENCH_RESULT "


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, vocab_size, block_size):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        # GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 L), zero biases
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T    # tied LM head: (B, T, V)


def make_optimizer(model, lr):
    """AdamW as explorer's Trainer: decay on matrices, none on biases and gains."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(forward, model, optimizer, x, y):
    logits = forward(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def usable_cores():
    """Cores this process may run on (respects taskset / cgroup affinity), as explorer's Numba."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def runtime_info():
    """Threads, the CPU kernels PyTorch dispatches to and its BLAS (JSON-able)."""
    blas = next((part.split("=", 1)[1] for part in torch.__config__.show().replace(",", " ").split()
                 if part.startswith("BLAS_INFO=")), "unknown")
    return {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cpu_count": usable_cores(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_blas": blas,
            "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "KMP_BLOCKTIME",
                                                   "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("n-layer", "n-head", "n-embd", "vocab-size", "block-size", "batch-size", "seq-len"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    a = p.parse_args(argv)

    torch.set_num_threads(usable_cores())
    torch.manual_seed(a.seed)
    model = GPT(a.n_layer, a.n_head, a.n_embd, a.vocab_size, a.block_size)
    optimizer = make_optimizer(model, lr=1e-4)
    forward = torch.compile(model) if a.compile else model
    rng = np.random.default_rng(a.seed)

    def step():
        # the batch is drawn inside the step, as explorer's Trainer does
        tokens = torch.from_numpy(rng.integers(0, a.vocab_size, size=(a.batch_size, a.seq_len + 1)))
        return train_step(forward, model, optimizer, tokens[:, :-1], tokens[:, 1:])

    result = {"compiled": a.compile, **runtime_info()}
    t0 = time.perf_counter()
    try:
        first_loss = step()                  # with --compile: compiles forward and backward
    except Exception as e:                   # inductor could not compile here: say what failed
        if not a.compile:
            raise
        result.update(compile_error=f"{type(e).__name__}: {str(e).strip()[:2000]}",
                      compile_failed_after_s=time.perf_counter() - t0)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    first_step_s = time.perf_counter() - t0
    for _ in range(a.warmup - 1):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result.update(step_s=times, first_loss=first_loss, first_step_s=first_step_s)
    if a.compile:   # the first step less an ordinary one
        result["compile_s"] = first_step_s - sorted(times)[len(times) // 2]
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
