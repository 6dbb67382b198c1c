"""The interpretability floor: read a model's internals without changing them.

    cache_activations, ActivationCache   one forward, every activation kept by its name
    logit_lens, residual_stream_names    the residual stream read out through ln_f and the LM head
    induction_scores, repeated_tokens    how much each head does "... A B ... A -> B"
    AttentionProbe, SnapshotHistory      attention maps of a probe prompt while a model trains

Imports only explorer.model (and explorer.kernels' NumPy references). The course checks
students' answers against these, and the views draw them: each measure has one definition.
"""
from .cache import ActivationCache, cache_activations
from .induction import induction_scores, repeated_tokens
from .lens import logit_lens, residual_stream_names
from .snapshots import AttentionProbe, SnapshotHistory

__all__ = ["ActivationCache", "cache_activations", "logit_lens", "residual_stream_names",
           "induction_scores", "repeated_tokens", "AttentionProbe", "SnapshotHistory"]
