"""An independent GPT-2 in PyTorch, for golden tests of explorer's model.

Written from the architecture, not from explorer's code (it imports nothing from explorer):
token + learned position embeddings; pre-LN blocks x = x + attn(ln1(x)), x = x + mlp(ln2(x));
causal multi-head attention; tanh-GELU MLP of width 4C; final layernorm; LM head tied to the
token embedding; biases everywhere. Autograd supplies every gradient.

Parameter names follow explorer's (nn.Linear (out, in) layout), so loading is a lookup:
"blocks.0.attn.qkv.weight" here is that tensor; only "wte"/"wpe" are embeddings'
".weight" (see explorer_name_of).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)                                 # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TorchGPT2(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, vocab_size, block_size):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)

    @classmethod
    def from_config(cls, config):
        """From any object with GPT-2's five config fields (e.g. explorer's GPTConfig)."""
        return cls(config.n_layer, config.n_head, config.n_embd, config.vocab_size, config.block_size)

    def forward(self, idx, targets=None):
        """(logits (B, T, V), mean cross-entropy over targets != -1, or None)."""
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T      # tied LM head, no bias
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss


def explorer_name_of(torch_name):
    """explorer's name for a parameter of TorchGPT2 ('wte.weight' -> 'wte')."""
    return {"wte.weight": "wte", "wpe.weight": "wpe"}.get(torch_name, torch_name)


def load_explorer_params(torch_model, params, dtype=torch.float64):
    """Copy explorer's {name: array} into torch_model (cast to dtype). Every parameter of
    each side must be matched by the other, with the same shape."""
    torch_model.to(dtype)
    ours = dict(torch_model.named_parameters())
    names = {explorer_name_of(n): n for n in ours}
    if set(names) != set(params):
        raise KeyError(f"parameter names differ: only in torch {sorted(set(names) - set(params))}, "
                       f"only in explorer {sorted(set(params) - set(names))}")
    with torch.no_grad():
        for name, array in params.items():
            target = ours[names[name]]
            if tuple(target.shape) != tuple(array.shape):
                raise ValueError(f"{name}: explorer shape {array.shape}, "
                                 f"torch shape {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.asarray(array, np.float64)))
    return torch_model


def torch_logits_loss_grads(config, params, idx, targets, dtype=torch.float64):
    """Run the torch model loaded with explorer's params: (logits, loss, {explorer name: grad}),
    as float64 NumPy arrays / float."""
    model = load_explorer_params(TorchGPT2.from_config(config), params, dtype)
    logits, loss = model(torch.from_numpy(np.asarray(idx, np.int64)),
                         torch.from_numpy(np.asarray(targets, np.int64)))
    loss.backward()
    grads = {explorer_name_of(n): p.grad.double().numpy() for n, p in model.named_parameters()}
    return logits.detach().double().numpy(), loss.item(), grads


def relative_error(actual, expected):
    """max |actual - expected| / max |expected| (inf when actual has NaN/Inf)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected).max()
    if not np.isfinite(err):
        return math.inf
    scale = np.abs(expected).max()
    return float(err / scale) if scale > 0 else float(err)


def golden_errors(model, idx, targets):
    """Run explorer's `model` (forward + backward) and the torch GPT-2 (float64) on the same
    params and batch; {what: relative error} for "logits", "loss" and every "grad:<name>"."""
    logits, loss = model.forward(idx, targets)
    logits = logits.copy()
    model.backward()
    t_logits, t_loss, t_grads = torch_logits_loss_grads(model.config, model.params, idx, targets)
    errors = {"logits": relative_error(logits, t_logits), "loss": relative_error(loss, t_loss)}
    for name, grad in t_grads.items():
        errors[f"grad:{name}"] = relative_error(model.grads[name], grad)
    return errors
