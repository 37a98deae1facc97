"""``load_model(spec, settings)``: one entry point for every model spec (models/spec.py).

The backend's module is imported only for its kind, so an ``api:`` model never imports torch.

>>> be = load_model("api:http://127.0.0.1:9/v1#m")  # no request is made until a prompt is measured
>>> type(be).__name__, be.info["kind"]
('ApiBackend', 'api')
>>> be.close()
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crystallab.errors import require
from crystallab.models.base import Backend, LoadSettings
from crystallab.models.spec import ModelSpec, parse_spec


def load_model(spec: str | ModelSpec, settings: LoadSettings | None = None, **overrides: Any) -> Backend:
    """The backend for a model spec: an ``api:`` server, vLLM, or transformers (HF id or folder,
    ``gguf:``, ``builtin:``). ``overrides`` set single load settings: ``load_model(s, dtype="float32")``.
    """
    settings = replace(settings or LoadSettings(), **overrides)
    ms = parse_spec(spec) if isinstance(spec, str) else spec
    if ms.kind == "api":
        from crystallab.models.api import ApiBackend

        return ApiBackend(ms)  # a server renders its own chat template
    if ms.kind == "vllm":
        from crystallab.models.vllm import load_vllm

        return load_vllm(ms, settings)
    for module in ("torch", "transformers"):  # the hf extra; checked before crystallab.models.hf loads
        require(module, "hf")
    from crystallab.models.hf import load_backend

    return load_backend(ms, settings)
