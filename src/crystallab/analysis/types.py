"""The typed analysis: what ``analyze`` returns, what ``analysis.json`` serialises and what the
report reads. Every figure is an :class:`Estimate` (point with a percentile interval) or a
plain number; nothing here is computed, only held.

>>> e = Estimate(0.5, 0.4, 0.6)
>>> e.to_json(), Estimate.from_json([0.5, None, None]).lo is None
([0.5, 0.4, 0.6], True)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

#: Bumped whenever the serialised shape changes; ``analysis.json`` of another version is refused.
ANALYSIS_VERSION = 2
STATES = ("liquid", "crystal", "undefined")
VALUES = ("holds", "fails", "inconclusive")
ENSEMBLES = ("raw", "chat")


def _clean(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (``None`` where undefined)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def of(cls, value: float | None, lo: float | None = None, hi: float | None = None) -> "Estimate":
        return cls(_clean(value), _clean(lo), _clean(hi))

    def to_json(self) -> list[float | None]:
        return [self.value, self.lo, self.hi]

    @classmethod
    def from_json(cls, data: Any) -> "Estimate":
        if isinstance(data, dict):
            return cls.of(data.get("value"), data.get("lo"), data.get("hi"))
        v = list(data) + [None] * 3
        return cls.of(v[0], v[1], v[2])

    def text(self, fmt: str = ".3f") -> str:
        """``0.512 [0.401, 0.633]``, or ``n/a``.

        >>> Estimate(0.5, 0.4, 0.6).text(".2f"), Estimate(None).text()
        ('0.50 [0.40, 0.60]', 'n/a')
        """
        if self.value is None:
            return "n/a"
        s = format(self.value, fmt)
        if self.lo is not None and self.hi is not None:
            s += f" [{format(self.lo, fmt)}, {format(self.hi, fmt)}]"
        return s


@dataclass(frozen=True)
class Checkpoint:
    label: str
    index: int
    parent: str | None  # from the parent graph (or the one measured before it)
    model: str = ""


@dataclass(frozen=True)
class Family:
    """One family of an ensemble: its mean (over the task's options), radius and basin."""

    name: str
    n_prompts: int
    mean: list[float]
    radius: float
    basin: int


@dataclass(frozen=True)
class EnsembleState:
    """The state of one ensemble (raw or chat) of one checkpoint × task (× split)."""

    checkpoint: str
    task: str
    ensemble: str  # raw | chat
    step: int | None
    split: str | None  # None: every prompt; train | heldout where the rows mark them
    state: str  # liquid | crystal | undefined
    reason: str
    n_prompts: int
    n_valid: int
    invalid_prompts: list[str]  # valid mass below v_min: listed and left out
    read_by: str  # families | prompts (one family: each prompt its own, radius ε)
    params: dict[str, Estimate]  # h, entropy_norm, spread, phi, n_basins, concentration, valid_mass
    phi_p: float | None
    phi_relabellings: int | None
    families: list[Family]  # with replicas: those of replica ``families_replica`` (the first defined one)
    basins: list[list[str]]
    aggregate: list[float] | None  # mean p̃ over every valid prompt (all replicas)
    replicas: int = 1
    replica_states: list[str] = field(default_factory=list)
    prompt_ids: list[str] = field(default_factory=list)  # the valid prompts, in matrix order
    families_replica: int | None = None


@dataclass(frozen=True)
class SeedP:
    p: float | None
    n_relabellings: int
    exact: bool
    testable: bool


@dataclass(frozen=True)
class Transition:
    """One parent → child edge: the child's chat aggregate against the root's raw basins, and
    against its parent's chat aggregate (settling figures)."""

    task: str
    parent: str
    child: str
    root: str
    d: dict[str, Estimate]  # per root family
    z: dict[str, Estimate]
    k_star: str | None
    k_star_counts: dict[str, int]  # across replicas
    margin: Estimate
    inside: bool | None
    d_chat0: Estimate
    seed_p: SeedP | None
    attraction: Estimate | None  # only when the child's training answers are known
    d_data: Estimate | None
    support: list[str]  # the parent's S
    retention: Estimate
    rho: Estimate
    redistribution: Estimate
    replicas: int = 1


@dataclass(frozen=True)
class Verdict:
    claim: str  # liquid | nucleation | settling
    value: str  # holds | fails | inconclusive
    why: str
    numbers: dict[str, Any]
    p_value: float | None = None
    p_holm: float | None = None


@dataclass(frozen=True)
class Dynamics:
    """Series of one tracked training run (checkpoint × task) and the transition test."""

    checkpoint: str
    task: str
    steps: list[int]
    coordinate: str  # d_k*(t) [family] | q(S)(t)
    k_star: str | None  # the root family d_k*(t) follows (None for q(S))
    series: dict[str, list[float | None]]  # medians across replicas
    replica_series: list[list[float | None]]  # the coordinate, one list per replica
    test: dict[str, Any]  # crystallab.transitions.TransitionTest.to_json()
    chi: list[float | None]  # variance across replicas (needs >= 3)
    prompt_variance: list[float | None]


@dataclass(frozen=True)
class Sweep:
    """A control-parameter sweep (``crystallab lab sweep``)."""

    name: str
    control: str
    grid: list[float]
    m: list[list[float | None]]  # replicas × grid
    m_lin: list[float]
    sharpness: Estimate
    lambda_c: Estimate
    dip: float | None
    dip_p: float | None
    hysteresis_p: float | None
    verdict: str  # sharp | gradual
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Analysis:
    """Everything ``analyze`` found; ``to_json``/``from_json`` give ``analysis.json``."""

    crystallab_version: str
    method: str
    thresholds: dict[str, Any]
    checkpoints: list[Checkpoint]
    root: str | None
    tasks: list[str]
    options: dict[str, list[str]]
    states: list[EnsembleState]
    transitions: list[Transition]
    verdicts: dict[str, dict[str, Verdict]]
    dynamics: list[Dynamics]
    sweeps: list[Sweep] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    version: int = ANALYSIS_VERSION
    # the rows analysed (a pyarrow Table), for the report's heatmaps: kept in memory, never in JSON
    table: Any = field(default=None, repr=False, compare=False, metadata={"json": False})

    def with_table(self, table: Any) -> Analysis:
        """This analysis with the rows it was computed from (``report`` draws heatmaps from them)."""
        import pyarrow.compute as pc

        if table is not None and "method" in table.column_names:
            table = table.filter(pc.equal(table.column("method"), self.method))
        return dataclasses.replace(self, table=table)

    def state(self, checkpoint: str, task: str, ensemble: str, split: str | None = None) -> EnsembleState | None:
        """The final-step state of one ensemble, or None."""
        found = [
            s for s in self.states if (s.checkpoint, s.task, s.ensemble, s.split) == (checkpoint, task, ensemble, split)
        ]
        return found[-1] if found else None

    def to_json(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_json(cls, data: Any) -> "Analysis":
        """The analysis in parsed ``analysis.json``. Another version, or any field of the wrong
        shape (checked against the type hints before decoding), is a ValueError naming the field,
        so what comes back is always well-typed."""
        if not isinstance(data, dict) or data.get("version") != ANALYSIS_VERSION:
            got = data.get("version") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"analysis version {got!r}, this crystallab reads {ANALYSIS_VERSION}")

        def number(x: Any) -> bool:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                return False
            try:
                float(x)
            except OverflowError:
                return False
            return True

        def check(tp: Any, x: Any, where: str) -> None:
            """Raise ValueError unless ``x`` decodes as ``tp`` (as ``_decode`` reads it)."""

            def bad(expected: str) -> ValueError:
                return ValueError(f"field '{where or 'analysis'}': expected {expected}, got {type(x).__name__}")

            origin = typing.get_origin(tp)
            if origin in (Union, types.UnionType):
                if x is not None:
                    check(next(a for a in typing.get_args(tp) if a is not type(None)), x, where)
            elif tp is Estimate:
                vals = [x.get(k) for k in ("value", "lo", "hi")] if isinstance(x, dict) else x
                if not isinstance(vals, list) or len(vals) > 3 or not all(v is None or number(v) for v in vals):
                    raise bad("an estimate [value, lo, hi]")
            elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
                if not isinstance(x, dict):
                    raise bad(f"an object ({tp.__name__})")
                hints = typing.get_type_hints(tp)
                for f in dataclasses.fields(tp):
                    sub = f"{where}.{f.name}" if where else f.name
                    if f.name in x:
                        check(hints[f.name], x[f.name], sub)
                    elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                        raise ValueError(f"field '{sub}' is missing")
            elif origin is list:
                if not isinstance(x, list):
                    raise bad("a list")
                for i, v in enumerate(x):
                    check(typing.get_args(tp)[0], v, f"{where}[{i}]")
            elif origin is dict:
                if not isinstance(x, dict):
                    raise bad("an object")
                for k, v in x.items():
                    check(typing.get_args(tp)[1], v, f"{where}.{k}")
            elif tp is float and not (x is None or number(x)):
                raise bad("a number")
            elif tp is int and not (number(x) and float(x).is_integer()):
                raise bad("a whole number")
            elif tp is str and not isinstance(x, str):
                raise bad("a string")
            elif tp is bool and not isinstance(x, bool):
                raise bad("true or false")

        check(cls, data, "")
        return _decode(cls, data)


# ---------------------------------------------------------------------------------------------
# serialisation: dataclasses <-> plain JSON, driven by the type hints above


def _encode(x: Any) -> Any:
    if isinstance(x, Estimate):
        return x.to_json()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _encode(getattr(x, f.name)) for f in dataclasses.fields(x) if f.metadata.get("json", True)}
    if isinstance(x, dict):
        return {str(k): _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    if isinstance(x, float):
        return _clean(x)
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _encode(x.item())
    return x


def _decode(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if data is None else _decode(args[0], data)
    if tp is Estimate:
        return Estimate.from_json(data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"expected an object for {tp.__name__}, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        kw = {f.name: _decode(hints[f.name], data[f.name]) for f in dataclasses.fields(tp) if f.name in data}
        return tp(**kw)
    if origin is list:
        (arg,) = typing.get_args(tp)
        return [_decode(arg, v) for v in _seq(data)]
    if origin is dict:
        _, arg = typing.get_args(tp)
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        return {k: _decode(arg, v) for k, v in data.items()}
    if tp is float:
        return None if data is None else float(data)
    if tp is int:
        return int(data)
    return data


def _seq(data: Any) -> list:
    if not isinstance(data, list):
        raise ValueError(f"expected a list, got {type(data).__name__}")
    return data
