"""crystallab: measure randomness crystallization in language models.

``import crystallab`` stays light (no torch); heavy parts load on first use.

>>> import crystallab
>>> crystallab.load_task("coin_flip").id
'coin_flip'
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_task": "crystallab.suite",
    "load_tasks": "crystallab.suite",
    "task_ids": "crystallab.suite",
    "Task": "crystallab.suite",
    "render_prompts": "crystallab.prompts",
    "MeasureConfig": "crystallab.measuring",
    "measure": "crystallab.measuring",
    "load_backend": "crystallab.models.hf",
    "LoadSettings": "crystallab.models.hf",
    "score_exact": "crystallab.scoring.exact",
    "sample_prompt": "crystallab.scoring.sample",
    "parse_answer": "crystallab.scoring.sample",
    "ResultStore": "crystallab.store",
    "read_table": "crystallab.store",
    "UserError": "crystallab.errors",
    "analyze": "crystallab.analysis",
    "analyze_dir": "crystallab.analysis",
    "load_analysis": "crystallab.analysis",
    "Analysis": "crystallab.analysis",
    "Thresholds": "crystallab.analysis",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crystallab' has no attribute '{name}'")
