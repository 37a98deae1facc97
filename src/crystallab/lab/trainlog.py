"""Quiet trainers: the Trainer's per-step log dicts (``{'loss': ..., 'grad_norm': ...}``, which its
``PrinterCallback`` prints to stdout) go to the ``crystallab.train`` logger, so into the run's
train.log (and the terminal with ``-v``); a terminal gets a progress bar through ``StepProgress``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from crystallab.console import TRAIN_LOGGER, route_library_logs


class TrainLog(TrainerCallback):
    """Each log dict of the trainer as one line of the ``crystallab.train`` logger."""

    def __init__(self, name: str):
        self.name = name
        self.logger = logging.getLogger(TRAIN_LOGGER)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if logs and state.is_local_process_zero:
            shown = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in logs.items() if k != "total_flos"}
            self.logger.info(f"{self.name} step {state.global_step}: {shown}")


class StepProgress(TrainerCallback):
    """Calls ``advance(1)`` after every training step (a console stage's bar)."""

    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.advance(1)


def quiet_trainer(trainer: Any, name: str) -> Any:
    """Replace the trainer's printing callbacks with :class:`TrainLog`; returns the trainer."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainLog(name))
    route_library_logs()  # the trainers' libraries are imported by now
    return trainer
