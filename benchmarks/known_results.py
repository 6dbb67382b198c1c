"""Known results on the real GPT-2 small, from explorer.interp, when its weights are cached.

    python benchmarks/known_results.py            # gpt2 from huggingface_hub's cache, never the network
    python benchmarks/known_results.py FOLDER     # any GPT-2 folder with GPT-2's vocabulary

Prints (1) the logit lens on "The Eiffel Tower is in the city of": from which block " Paris"
leads; (2) the heads with the highest induction score on repeated random tokens, where GPT-2
small's known induction heads (5.1, 5.5, 6.9, 7.2, 7.10, as TransformerLens writes them) should
stand out; (3) activation patching and direct logit attribution on the IOI prompt "When Mary
and John went to the store, John gave a drink to" (" Mary" vs " John", corrupted by swapping
the second name). Without the cached weights it says so and exits 0: it never downloads
(`explorer download gpt2` does, online).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")    # read by huggingface_hub at import: cache only

from explorer.interp import (  # noqa: E402
    head_induction_scores,
    logit_attribution,
    logit_direction,
    patch_heads,
    patch_residual,
    repeated_tokens,
)
from explorer.interp.summary import heads_line, lens_table, patching_table, top_heads  # noqa: E402

EIFFEL = "The Eiffel Tower is in the city of"
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
KNOWN_INDUCTION_HEADS = [(5, 1), (5, 5), (6, 9), (7, 2), (7, 10)]


def cached_folder(name: str) -> str | None:
    """The folder of `name`'s cached config.json and safetensors, or None (no request made)."""
    from huggingface_hub import try_to_load_from_cache

    from explorer.io.hub import repo_id_of
    repo_id = repo_id_of(name)
    found = [try_to_load_from_cache(repo_id, f) for f in ("config.json", "model.safetensors")]
    if all(isinstance(path, str) and os.path.isfile(path) for path in found):
        return os.path.dirname(found[0])
    return None


def one_token(model, text: str) -> int:
    ids = model.tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens in this vocabulary; the metric needs one")
    return ids[0]


def logit_lens_section(model) -> None:
    print(f'\n1. Logit lens on "{EIFFEL}" (the next token after "of"):')
    print(lens_table(model, model.tokenizer.encode(EIFFEL), one_token(model, " Paris")))


def induction_section(model, batch: int, length: int) -> None:
    tokens = repeated_tokens(np.random.default_rng(0), batch, length, model.config.vocab_size)
    scores = head_induction_scores(model, tokens)
    print(f"\n2. Induction scores on {batch} rows of {length} random tokens, repeated "
          f"(attention from each token of the repeat to the one after its first copy):")
    print("   top heads: " + heads_line(scores, k=10))
    ranked = [(l, h) for l, h, _ in top_heads(scores, k=scores.size)]
    known = [(l, h) for l, h in KNOWN_INDUCTION_HEADS if l < scores.shape[0] and h < scores.shape[1]]
    print("   GPT-2 small's known induction heads: " + ("  ".join(
        f"{l}.{h} {scores[l, h]:.2f} (rank {ranked.index((l, h)) + 1})" for l, h in known)
        or f"none of them is in this model's {scores.shape[0]} layers x {scores.shape[1]} heads"))
    print(f"   median head: {np.median(scores):.3f}")


def ioi_section(model) -> None:
    clean, corrupted = (np.array(model.tokenizer.encode(s)) for s in (IOI_CLEAN, IOI_CORRUPTED))
    mary, john = one_token(model, " Mary"), one_token(model, " John")
    print(f'\n3. IOI: "{IOI_CLEAN}" -> " Mary" vs " John"; corrupted: "...{IOI_CORRUPTED[-22:]}"')
    labels = [model.tokenizer.decode([int(t)]).strip() or "_" for t in clean]
    print("   residual stream entering each block, patched one position at a time:")
    print(_indent(patching_table(patch_residual(model, clean, corrupted, mary, john), labels)))
    heads = patch_heads(model, clean, corrupted, mary, john)
    print("   heads patched one at a time, highest recovery: " + heads_line(heads.normalised, k=8))
    print("   heads patched one at a time, most negative: "
          + "  ".join(f"{l}.{h} {-s:.2f}" for l, h, s in top_heads(-heads.normalised, k=5)))
    dla = logit_attribution(model, clean, logit_direction(model, mary, john))
    print("   direct logit attribution of each head to logit(' Mary') - logit(' John'), top: "
          + heads_line(dla.heads[0], k=8))
    print(f"   (the parts add up: {dla.components[0].sum() + dla.ln_f_bias[0]:+.3f} = the model's "
          f"{dla.logit[0]:+.3f})")


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="gpt2",
                        help="a hub name looked up in the local cache only (default gpt2), or a folder")
    parser.add_argument("--batch", type=int, default=4, help="rows of repeated tokens (default 4)")
    parser.add_argument("--length", type=int, default=50, help="length of each run (default 50)")
    args = parser.parse_args(argv)

    import explorer
    folder = args.model if os.path.isdir(args.model) else cached_folder(args.model)
    if folder is None:
        from huggingface_hub import constants
        print(f"SKIPPED: {args.model!r} is not in the local Hugging Face cache "
              f"({constants.HF_HUB_CACHE}); this script never downloads. Online, run "
              f"`explorer download {args.model}`, then run it again.")
        return 0
    model = explorer.pretrained(folder)
    print(f"model: {args.model} ({folder}): {model!r}")
    if model.tokenizer is None:
        print(f"SKIPPED: the prompts need GPT-2's tokenizer, and this model's vocabulary has "
              f"{model.config.vocab_size} tokens, not 50257.")
        return 0
    for section in (lambda: logit_lens_section(model),
                    lambda: induction_section(model, args.batch, args.length),
                    lambda: ioi_section(model)):
        started = time.perf_counter()
        section()
        print(f"   ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
