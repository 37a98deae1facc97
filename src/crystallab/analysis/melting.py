"""Melting curves: order parameters and states against the sampling temperature.

Temperature is a control parameter every checkpoint has, published ones included: the exact
scorer gives each prompt's distribution at several temperatures from one forward pass
(``crystallab measure --temperature 0.3,0.5,...``). Per temperature the rows are analysed as
any table is (SCIENCE.md v2 "States"); per checkpoint x task x ensemble the curves are
``spread``, ``phi``, ``n_basins``, ``h`` and valid mass with their intervals, and the state.

The melting temperature ``T_m`` of an ensemble that is a crystal at the lowest temperature is the
first temperature at which it reads liquid. Its interval is the grid bracket (the last crystal
temperature below it, ``T_m``]: the curve is only known on the grid, so a finer grid narrows it.
An ensemble that never reads liquid "does not melt below T_max". As T grows every prompt's
distribution flattens towards uniform, so families can also draw together: a crystal at high T
with ``h`` near 1 is a uniform gas, not the ordered crystal of low T (the curves show ``h``).

>>> melting_point([0.5, 1.0, 2.0], ["crystal", "crystal", "liquid"])
(2.0, (1.0, 2.0), 'melts')
>>> melting_point([0.5, 1.0], ["crystal", "crystal"])
(None, None, 'does not melt below T_max = 1')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Estimate
from crystallab.models.decoding import Decoding

CURVES = ("spread", "phi", "n_basins", "h", "valid_mass")


@dataclass(frozen=True)
class MeltingCurve:
    """One checkpoint x task x ensemble across temperatures (truncation settings fixed)."""

    checkpoint: str
    task: str
    ensemble: str
    truncation: str  # the fixed top-k / top-p / min-p, as a label ("none" when off)
    temperatures: list[float]
    states: list[str]
    params: dict[str, list[Estimate | None]]  # CURVES, one entry per temperature
    t_m: float | None
    t_m_interval: tuple[float, float] | None
    verdict: str  # melts | does not melt below T_max = … | liquid already at T_min = … | undefined
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = {k: [None if e is None else e.to_json() for e in v] for k, v in self.params.items()}
        return d


def melting_point(temps: list[float], states: list[str]) -> tuple[float | None, tuple[float, float] | None, str]:
    """(T_m, its grid bracket, verdict) from the states at ascending temperatures."""
    defined = [(t, s) for t, s in zip(temps, states) if s != "undefined"]
    if not defined:
        return None, None, "undefined at every temperature"
    if defined[0][1] == "liquid":
        return None, None, f"liquid already at T_min = {defined[0][0]:g}"
    last = defined[0][0]
    for t, s in defined[1:]:
        if s == "liquid":
            return t, (last, t), "melts"
        last = t
    return None, None, f"does not melt below T_max = {defined[-1][0]:g}"


def melt(source: Any, thresholds: Thresholds | None = None, method: str | None = None) -> list[MeltingCurve]:
    """Melting curves of every checkpoint x task x ensemble of a table (``Results``, folder or
    pyarrow Table), one per truncation setting measured at two or more temperatures."""
    from crystallab.analysis import _analyze_table, _select_method, decodings_in, only_decoding
    from crystallab.results import Results

    if isinstance(source, str) or hasattr(source, "__fspath__"):
        source = Results.load(source)
    if isinstance(source, Results):
        source = source.to_arrow()
    th = thresholds or Thresholds()
    rows, method = _select_method(source, method)
    have = decodings_in(rows)
    groups: dict[tuple[int, float, float], list[Decoding]] = {}
    for d in have:
        groups.setdefault((d.top_k, d.top_p, d.min_p), []).append(d)
    curves: list[MeltingCurve] = []
    for (k, p, m), ds in groups.items():
        ds = sorted(ds, key=lambda d: d.temperature)
        if len(ds) < 2:
            continue
        trunc = " ".join(Decoding(1.0, k, p, m).label.split()[1:]) or "none"
        per_t = [_analyze_table(only_decoding(rows, d), th, method, None, None) for d in ds]
        temps = [d.temperature for d in ds]
        keys = dict.fromkeys((s.checkpoint, s.task, s.ensemble) for an in per_t for s in an.states if s.split is None)
        for c, task, kind in keys:
            sts = [an.state(c, task, kind) for an in per_t]
            states = [s.state if s is not None else "undefined" for s in sts]
            params = {n: [(s.params.get(n) if s is not None else None) for s in sts] for n in CURVES}
            t_m, bracket, verdict = melting_point(temps, states)
            curves.append(MeltingCurve(c, task, kind, trunc, temps, states, params, t_m, bracket, verdict))
    return curves


def melting_table(curves: list[MeltingCurve]) -> str:
    """The curves as text: one block per ensemble, one line per temperature."""
    out = []
    for cv in curves:
        head = f"{cv.checkpoint} / {cv.task} / {cv.ensemble} (truncation: {cv.truncation}): {cv.verdict}"
        if cv.t_m is not None and cv.t_m_interval is not None:
            head += f", T_m = {cv.t_m:g} in ({cv.t_m_interval[0]:g}, {cv.t_m_interval[1]:g}]"
        out.append(head)
        out.append(f"  {'T':>5}  {'state':<9} " + " ".join(f"{n:>22}" for n in CURVES))
        for i, (t, s) in enumerate(zip(cv.temperatures, cv.states)):
            cells = []
            for n in CURVES:
                e = cv.params[n][i]
                cells.append(f"{(e.text('.0f' if n == 'n_basins' else '.3f') if e is not None else '-'):>22}")
            out.append(f"  {t:>5g}  {s:<9} " + " ".join(cells))
    return "\n".join(out)
