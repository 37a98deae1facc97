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


@pytest.fixture(scope="session")
def peaked(tiny_ckpt, backend_of):
    """A tiny model trained for a few steps on lists of random numbers, so that options carry
    real, uneven mass (a random init puts almost all of it on ⊥). Numbers are separated by ', ',
    ',\\n' or ',  ', so that after a comma a space is likely but not certain (W well below 1), and
    two spaces, which the tokenizer writes as a lone space twice, happen too."""
    import random

    from tiny import train_briefly

    be = backend_of(tiny_ckpt("llama", "digits", seed=3))
    rng = random.Random(0)
    weights = [1, 2, 3, 2, 1, 5, 9, 2, 1, 4]

    def line() -> str:
        nums = [str(rng.choices(range(1, 11), weights)[0]) for _ in range(10)]
        seps = rng.choices([", ", ",\n", ",  "], [5, 3, 2], k=len(nums) - 1)
        return "Random numbers between 1 and 10: " + nums[0] + "".join(s + x for s, x in zip(seps, nums[1:]))

    return train_briefly(be, [line() for _ in range(64)])
