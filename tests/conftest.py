from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_root):
    """make(arch, tokenizer kind, chat_template=False, seed=0) -> a saved tiny checkpoint dir."""
    from tiny import make_checkpoint

    def make(arch: str = "llama", tok: str = "digits", chat_template: bool = False, seed: int = 0) -> Path:
        return make_checkpoint(tiny_root, arch, tok, chat_template=chat_template, seed=seed)

    return make


@pytest.fixture(scope="session")
def backend_of():
    from crystallab.models.hf import load_backend

    cache: dict[str, object] = {}

    def get(path: Path):
        if str(path) not in cache:
            cache[str(path)] = load_backend(str(path))
        return cache[str(path)]

    return get
