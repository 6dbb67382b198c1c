"""The training floor: one atomic step (the Trainer), the background runner, statistics
recorders, presets and run folders.

Imports the model, data and tokenizer floors; views subscribe to the trainer's events.
"""
from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
