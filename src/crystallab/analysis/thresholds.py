"""The analysis parameters. None is tuned to data: ε is the resolution (JS distance below which
a thousand samples cannot tell two distributions apart), v_min says when a prompt tells little,
α, the replica share and ΔBIC are conventional test levels. All are printed in every report."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from crystallab.errors import UserError

_WHOLE = ("n_boot", "n_perm", "seed")


@dataclass(frozen=True)
class Thresholds:
    eps: float = 0.05  # resolution ε (JS distance, nats^½): radius floor and the "RL moved" bar
    v_min: float = 0.2  # prompts with less valid mass are listed and left out
    alpha: float = 0.05  # seed_p (Holm-corrected across tasks) must be below this
    cover: float = 0.9  # the parent's support S holds this much of its chat aggregate
    rho_min: float = 0.8  # settling: excess retention at least this
    replica_share: float = 0.8  # nucleation: the same k* in at least this share of replicas
    dbic: float = 10.0  # transition test: the logistic must beat the exponential by this
    sharp_share: float = 0.8  # ... in at least this share of replicas
    n_sd: float = 3.0  # ... with a total change above this many replica standard deviations
    n_boot: int = 1000  # bootstrap resamples (sampled rows: at most 200, each redraws counts)
    n_perm: int = 1999  # random relabellings when exact enumeration (<= 2,000) is too large
    level: float = 0.95  # interval level
    seed: int = 0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_file(cls, path: str | Path) -> "Thresholds":
        """The thresholds in YAML file ``path`` (defaults for the rest); a broken file, an unknown
        key or a value that is not a finite number is one line naming the file and the key."""
        from crystallab.yamlconf import kind_of, read_settings

        data = read_settings(path, cls.names(), "thresholds")
        for k, v in data.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                shown = f" ({v!r})" if isinstance(v, str) and len(v) <= 40 else ""
                raise UserError(f"{path}: threshold '{k}' must be a number, got {kind_of(v)}{shown}")
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{path}: threshold '{k}' must be a finite number, got {v!r}")
            if k in _WHOLE:
                if int(v) != v:
                    raise UserError(f"{path}: threshold '{k}' must be a whole number, got {v!r}")
                data[k] = int(v)
            elif abs(v) > 1e300:
                raise UserError(f"{path}: threshold '{k}' is too large to be a number")
            else:
                data[k] = float(v)
        th = cls(**data)
        th.validate(str(path))
        return th

    def validate(self, src: str = "thresholds") -> None:
        for name in ("eps", "v_min", "alpha", "cover", "rho_min", "replica_share", "sharp_share", "level"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0 or (name == "level" and v >= 1.0):
                raise UserError(f"{src}: threshold '{name}' must be in (0, 1], got {v!r}")
        if self.n_boot < 1 or self.n_perm < 1:
            raise UserError(f"{src}: n_boot and n_perm must be at least 1")
