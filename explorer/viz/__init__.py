"""Views: widgets that show a model and its training, one view per module.

Views subscribe to a Trainer's events (or read a model's record); they never own training.
Every view is a View (view.py): it displays live or as a static copy, and close() detaches it.
Names load on first use, so `import explorer` stays light without Jupyter.
"""
import importlib

_WHERE = {
    "View": "view",
    "TrainingDashboard": "dashboard",
    "AttentionExplorer": "attention",
    "GradientFlow": "gradients",
    "StepThrough": "stepthrough",
    "TokenView": "tokens",
    "SamplingView": "tokens",
    "KernelLabView": "lab",
    "FigureWidget": "_figure",   # plotly's FigureWidget whose 5 MB of code the server serves
}


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'explorer.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


__all__ = list(_WHERE)
