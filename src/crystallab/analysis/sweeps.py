"""A control-parameter sweep as a typed :class:`Sweep` (SCIENCE.md v2, "Sharpness against a
control parameter"): the order parameter ``m(λ)`` per replica beside the fitting null
``m_lin(λ)``, ``Σ`` and ``λ_c`` with replica intervals, the dip test at the grid point nearest
``λ_c`` and the hysteresis comparison. ``crystallab lab sweep`` measures the runs and calls
:func:`sweep`; nothing here trains or reads files.

>>> import numpy as np
>>> lam = np.linspace(0, 1, 11)
>>> fA, fB = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.1, 0.8])
>>> rng = np.random.default_rng(0)
>>> M = np.where(lam < 0.5, -0.9, 0.9) + rng.normal(0, 0.05, (5, 11))
>>> s = sweep("mix", "lambda", lam, M, fA, fB, ends_from_A=[-0.9, -0.8, -0.9, -0.85, -0.9],
...           ends_from_B=[0.9, 0.8, 0.85, 0.9, 0.95])
>>> s.verdict, s.sharpness.lo > 2, s.hysteresis_p < 0.01
('sharp', True, True)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from crystallab import metrics as M_
from crystallab import transitions as TR
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Estimate, Sweep


def order_parameter(q: ArrayLike, f_A: ArrayLike, f_B: ArrayLike) -> float:
    """``m = (d_A - d_B) / d(f̄_A, f̄_B)`` of one end state ``q``: -1 at A, +1 at B.

    >>> order_parameter([0.8, 0.2], [0.8, 0.2], [0.2, 0.8])
    -1.0
    """
    return float(TR.mixture_m(M_.js_distance(q, f_A), M_.js_distance(q, f_B), M_.js_distance(f_A, f_B)))


def _f(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def sweep(
    name: str,
    control: str,
    grid: Sequence[float],
    m: ArrayLike,
    f_A: ArrayLike,
    f_B: ArrayLike,
    *,
    ends_from_A: Sequence[float] | None = None,
    ends_from_B: Sequence[float] | None = None,
    th: Thresholds | None = None,
) -> Sweep:
    """Every statistic of one sweep; ``m`` is (replicas × grid) end states."""
    th = th or Thresholds()
    lam = np.asarray(grid, dtype=float)
    M = np.asarray(m, dtype=float)
    m_lin = TR.fitting_null(lam, f_A, f_B)
    sh = TR.sweep_sharpness(lam, M, m_lin, n_boot=th.n_boot, level=th.level, seed=th.seed)
    dip = dip_p = math.nan
    at = None
    if math.isfinite(sh.lambda_c):
        at = int(np.argmin(np.abs(lam - sh.lambda_c)))  # ties go to the lower grid point
        dip, dip_p = TR.dip_test(M[:, at])
    hyst = math.nan
    if ends_from_A is not None and ends_from_B is not None:
        hyst = TR.hysteresis_test(ends_from_A, ends_from_B)[1]
    verdict = TR.sweep_verdict(sh, dip_p, hyst, alpha=th.alpha)
    return Sweep(
        name=name,
        control=control,
        grid=[float(x) for x in lam],
        m=[[_f(x) for x in row] for row in M.tolist()],
        m_lin=[float(x) for x in m_lin],
        sharpness=Estimate.of(sh.sigma, *sh.sigma_interval),
        lambda_c=Estimate.of(sh.lambda_c, *sh.lambda_c_interval),
        dip=_f(dip),
        dip_p=_f(dip_p),
        hysteresis_p=_f(hyst),
        verdict=verdict,
        numbers={
            "sharpness": sh.to_json(),
            "dip_at": None if at is None else float(lam[at]),
            "ends_from_A": list(ends_from_A or []),
            "ends_from_B": list(ends_from_B or []),
            "alpha": th.alpha,
        },
    )
