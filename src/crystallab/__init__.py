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
    # the notebook API (docs/python.md)
    "load_model": "crystallab.models.load",
    "measure": "crystallab.measuring",
    "analyze": "crystallab.analysis",
    "report": "crystallab.reporting",
    "Results": "crystallab.results",
    "load_task": "crystallab.suite",
    "tasks": "crystallab.suite",
    "Thresholds": "crystallab.analysis",
    # one level down
    "LoadSettings": "crystallab.models.base",
    "MeasureSettings": "crystallab.measuring",
    "MeasureConfig": "crystallab.measuring",
    "run_measure": "crystallab.measuring",
    "load_tasks": "crystallab.suite",
    "task_ids": "crystallab.suite",
    "Task": "crystallab.suite",
    "render_prompts": "crystallab.prompts",
    "analyze_dir": "crystallab.analysis",
    "load_analysis": "crystallab.analysis",
    "Analysis": "crystallab.analysis",
    "summary_text": "crystallab.analysis",
    "write_report": "crystallab.reporting",
    "load_ladder": "crystallab.ladder",
    "run_ladder": "crystallab.ladder",
    "LabConfig": "crystallab.lab.config",
    "UserError": "crystallab.errors",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    # No public name is also a submodule's name (measuring, reporting, suite), so importing a
    # submodule never rebinds one of these: an attribute means the same on every access.
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crystallab' has no attribute '{name}'")
