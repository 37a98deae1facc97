"""PhaseTracker: a TrainerCallback that measures a fixed prompt set with the exact scorer every
N steps and appends step-indexed rows to the run's distribution table, so order parameters
can be followed through training (SCIENCE.md, "Dynamics during training")."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from transformers import TrainerCallback

from crystallab.measuring import MeasureConfig, run_measure
from crystallab.models.base import LoadSettings
from crystallab.models.hf import HFBackend
from crystallab.suite import load_tasks


class PhaseTracker(TrainerCallback):
    """Measure ``cfg`` (its tasks, prompts and out dir) at step 0, every ``every`` steps and at
    the end. ``cfg.label``/``cfg.stage`` name the run; each measurement gets ``step``."""

    def __init__(self, cfg: MeasureConfig, tokenizer: Any = None, every: int = 10, log=None):
        self.cfg = replace(cfg, progress=False)
        self.tokenizer = tokenizer
        self.every = max(1, int(every))
        self.measured: list[int] = []
        self.seconds = 0.0  # time spent measuring (the tracker's share of a training stage)
        self.log = log or (lambda s: None)
        self.tasks = load_tasks(self.cfg.tasks, self.cfg.tasks_dir)
        self._backend: HFBackend | None = None

    def _measure(self, model: Any, step: int, processing_class: Any = None) -> None:
        if step in self.measured:
            return
        t0 = time.perf_counter()
        self.tokenizer = self.tokenizer or processing_class  # the trainer's own tokenizer by default
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: LoRA layers stay active
        was_training = inner.training
        info = {"model": self.cfg.model, "kind": "training", "label": self.cfg.label, "step": step}
        backend = self._backend
        if backend is None or backend.model is not inner:
            # one backend per model: its vocabulary texts and boundary mask (seconds to build for a
            # 262k vocabulary) depend on the tokenizer only, not on the weights being trained
            backend = self._backend = HFBackend(inner, self.tokenizer, info, LoadSettings())
        else:
            backend.model.eval()
            backend.info = info
        try:
            # one task list for every step; distributions.parquet is rewritten once, by whoever analyses the run
            cfg = replace(self.cfg, step=step)
            run_measure(cfg, backend=backend, log=self.log, tasks=self.tasks, consolidate=False)
        finally:
            inner.train(was_training)
        self.measured.append(step)
        self.seconds += time.perf_counter() - t0

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
        self._measure(model, 0, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        if state.global_step % self.every == 0:
            self._measure(model, state.global_step, processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kw):
        self._measure(model, state.global_step, processing_class)
