"""What a model learns from: text corpora (tokenized, split, sampled) and toy tasks.

A dataset offers `vocab_size`, `tokenizer`, `seq_len` (None for text: any block size),
`get_batch(split, batch_size, block_size, rng) -> (x, y)`, `describe()`, and for toy tasks
`evaluate(model, rng) -> {"accuracy": ...}`.
"""
from .corpora import CORPORA, load_text
from .download import ChecksumError, DownloadError, cache_dir, fetch
from .tasks import IGNORE_INDEX, TASKS, AddTask, RepeatTask, ReverseTask, SortTask, ToyTask, make_task
from .text import TextDataset, text_dataset, tokenize_cached

__all__ = ["CORPORA", "load_text", "ChecksumError", "DownloadError", "cache_dir", "fetch",
           "IGNORE_INDEX", "TASKS", "AddTask", "RepeatTask", "ReverseTask", "SortTask", "ToyTask",
           "make_task", "TextDataset", "text_dataset", "tokenize_cached"]
