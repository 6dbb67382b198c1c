"""The interpretability floor: read a model's internals without changing them.

    AttentionProbe, SnapshotHistory   attention maps of a probe prompt while a model trains

Imports only explorer.model (and explorer.kernels' NumPy references): the course and the
views both import from here, so each measure has one definition.
"""
from .snapshots import AttentionProbe, SnapshotHistory

__all__ = ["AttentionProbe", "SnapshotHistory"]
