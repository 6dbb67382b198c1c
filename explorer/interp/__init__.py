"""The interpretability floor: read a model's internals, and replace one to see what it carries.

    cache_activations, ActivationCache   one forward, every activation kept by its name
    logit_lens, residual_stream_names    the residual stream read out through ln_f and the LM head
    induction_scores, repeated_tokens    how much each head does "... A B ... A -> B"
    head_induction_scores                every head's induction score, (n_layer, NH), one call
    run_with_hooks, hooks, hook_points   the model's own forward, reading or replacing activations by name
    logit_attribution, logit_direction   direct logit attribution per component and per head
    patch_residual, patch_heads          activation patching, clean -> corrupted, logit difference
    (patch_activations: any hook point)
    AttentionProbe, SnapshotHistory      attention maps of a probe prompt while a model trains

Imports only explorer.model (and explorer.kernels' NumPy references). The course checks
students' answers against these, and the views draw them: each measure has one definition.
"""
from .attribution import LogitAttribution, logit_attribution, logit_direction
from .cache import ActivationCache, cache_activations
from .hooks import hook_points, hooks, replace_with, resid_pre_name, run_with_hooks
from .induction import head_induction_scores, induction_scores, repeated_tokens
from .lens import logit_lens, residual_stream_names
from .patching import PatchingResult, logit_difference, patch_activations, patch_heads, patch_residual
from .snapshots import AttentionProbe, SnapshotHistory

__all__ = ["ActivationCache", "cache_activations", "logit_lens", "residual_stream_names",
           "induction_scores", "repeated_tokens", "head_induction_scores", "AttentionProbe",
           "SnapshotHistory", "hook_points", "hooks", "replace_with", "resid_pre_name",
           "run_with_hooks", "LogitAttribution", "logit_attribution", "logit_direction",
           "PatchingResult", "logit_difference", "patch_activations", "patch_heads",
           "patch_residual"]
