"""Ready-made experiments: a dataset, a model size and training settings that work together.

    preset = get_preset("reverse-tiny")
    data, model, trainer = preset.build()
    trainer.run(preset.steps)
    data.evaluate(model, np.random.default_rng(0))   # {"accuracy": 1.0, ...}

Each preset states its goal, and the numbers in it were measured on a 2-core CPU (see
`measured`). Toy-task presets train in seconds; shakespeare-char takes a few minutes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model.config import GPTConfig

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from .trainer import Batches, Trainer


def make_dataset(spec: dict) -> Batches:
    """A dataset from a JSON-able description:
    {"task": "reverse", **task options}  or  {"corpus": "shakespeare", "tokenizer": "char"}."""
    from ..data import make_task, text_dataset
    spec = dict(spec)
    if "task" in spec:
        return make_task(spec.pop("task"), **spec)
    if "corpus" in spec:
        return text_dataset(spec.pop("corpus"), **spec)
    raise ValueError(f"a dataset description needs a 'task' or a 'corpus' key, got {spec!r}")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: dict                  # for make_dataset
    # the model (vocab_size comes from the dataset's tokenizer)
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    # training
    batch_size: int
    lr: float
    steps: int
    warmup: int = 0
    min_lr: float | None = None  # floor of the cosine decay; None: lr / 10 (as nanoGPT)
    eval_interval: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    sample_prompt: str = "\n"   # what the run's text samples continue (text corpora)
    goal: str = ""              # what a run of `steps` steps reaches
    measured: str = ""          # what we measured, where

    def make_dataset(self) -> Batches:
        """A fresh dataset (a task or a text corpus, as `data` describes it)."""
        return make_dataset(self.data)

    def model_config(self, dataset: Any) -> GPTConfig:
        return GPTConfig(n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         vocab_size=dataset.vocab_size, block_size=self.block_size)

    def trainer_options(self) -> dict[str, Any]:
        """Keyword arguments for explorer.train.trainer.Trainer (the learning rate warms up over
        `warmup` steps, then decays along a cosine to min_lr at `steps` and stays there, so a
        step taken after the run still learns)."""
        min_lr = self.lr / 10 if self.min_lr is None else self.min_lr
        return dict(batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup,
                    max_steps=self.steps, min_lr=min_lr, eval_interval=self.eval_interval,
                    weight_decay=self.weight_decay, grad_clip=self.grad_clip)

    def build(self, seed: int = 0, **trainer_args: Any) -> tuple[Batches, GPT, Trainer]:
        """(dataset, model, trainer), ready for trainer.run(preset.steps). trainer_args: the
        Trainer's other arguments (comm, zero, rank_timeout)."""
        from ..model.gpt import GPT
        from .trainer import Trainer
        dataset = self.make_dataset()
        model = GPT(self.model_config(dataset), seed=seed)
        trainer = Trainer(model, dataset, seed=seed, **self.trainer_options(), **trainer_args)
        return dataset, model, trainer


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        name="reverse-tiny",
        description="Reverse 8 digits ('40213577=77531204'): each answer digit copies one prompt "
                    "position, so the attention map shows an anti-diagonal.",
        data={"task": "reverse", "length": 8},
        n_layer=2, n_head=4, n_embd=64, block_size=16,
        batch_size=64, lr=3e-3, warmup=20, steps=200, eval_interval=50,
        goal=">= 95% exact-match accuracy",
        measured="100% exact match on 1,000 validation examples for seeds 0-3 (100% from step "
                 "~50); 200 steps take ~4 s at ~14 ms/step on 2 cores",
    ),
    Preset(
        name="sort-tiny",
        description="Sort 8 digits ('86523000=00023568'): attention must find the next-smallest "
                    "digit not yet written.",
        data={"task": "sort", "length": 8},
        n_layer=2, n_head=4, n_embd=64, block_size=16,
        batch_size=64, lr=3e-3, warmup=20, steps=600, eval_interval=100,
        goal=">= 95% exact-match accuracy",
        measured="99.9-100% exact match for seeds 0-2; 600 steps take ~10 s at ~14 ms/step "
                 "on 2 cores",
    ),
    Preset(
        name="add-tiny",
        description="Add two 3-digit numbers, sum written least significant digit first "
                    "('850+649=9941' means 1499): carries, one digit at a time.",
        data={"task": "add", "n_digits": 3},
        n_layer=2, n_head=4, n_embd=64, block_size=11,
        batch_size=64, lr=3e-3, warmup=20, steps=1500, eval_interval=250,
        goal=">= 95% exact-match accuracy",
        measured="98.6-100% exact match for seeds 0-2; 1,500 steps take ~15-20 s at ~10 ms/step "
                 "on 2 cores",
    ),
    Preset(
        name="repeat-tiny",
        description="Noise, a run of distinct letters, then the run again: to write the copy the "
                    "model must find the current letter earlier and predict what followed it, the "
                    "job of an induction head (notebook 06 measures how this model does it).",
        data={"task": "repeat", "min_length": 4, "max_length": 8},
        n_layer=2, n_head=4, n_embd=64, block_size=17,
        batch_size=128, lr=3e-3, warmup=50, steps=2000, eval_interval=250,
        goal=">= 95% exact-match accuracy",
        measured="100% exact match for seeds 0-2 after 2,000 steps; the copy is learned "
                 "suddenly, somewhere between steps ~500 and ~1,500 depending on the seed (seed 1: "
                 "85% at 1,200 steps). ~80 s at ~40 ms/step on 2 cores",
    ),
    Preset(
        name="shakespeare-char",
        description="Tiny Shakespeare, one token per character (65 of them): a small GPT that "
                    "writes recognisable pseudo-Shakespeare after a few minutes on a laptop.",
        data={"corpus": "shakespeare", "tokenizer": "char"},
        n_layer=4, n_head=4, n_embd=128, block_size=64,
        batch_size=32, lr=3e-3, warmup=50, steps=2000, min_lr=3e-4, eval_interval=200,
        weight_decay=0.1,
        goal="validation loss below 1.8",
        measured="validation loss 1.62 after 2,000 steps (2.27 after 200), ~4.5 min at ~125 "
                 "ms/step on 2 cores; samples have speaker names, verse lines, mostly real words",
    ),
]}


def get_preset(name: str) -> Preset:
    """The preset called `name` (ValueError listing the available ones otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"no preset named {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]
