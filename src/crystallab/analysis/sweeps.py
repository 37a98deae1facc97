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
import warnings
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from crystallab import metrics as M_
from crystallab import transitions as TR
from crystallab.analysis.thresholds import Thresholds
from crystallab.analysis.types import Estimate, Sweep

NARROWS, WIDE, CANNOT_TELL = "narrows", "does not narrow", "cannot tell"


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
    m_null: ArrayLike | None = None,
    th: Thresholds | None = None,
) -> Sweep:
    """Every statistic of one sweep; ``m`` is (replicas × grid) end states. ``m_null`` replaces
    the mixture's fitting null (for a training-amount control, :func:`transitions.relaxation_null`
    on a ``log10`` grid); it is stored as the sweep's ``m_lin``."""
    th = th or Thresholds()
    lam = np.asarray(grid, dtype=float)
    M = np.asarray(m, dtype=float)
    m_lin = TR.fitting_null(lam, f_A, f_B) if m_null is None else np.asarray(m_null, dtype=float).ravel()
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


def transition_width(
    lams: ArrayLike, M: ArrayLike, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """The transition's width in ``λ``: ``|m(1) - m(0)| / max|dm/dλ|`` of the replica-median
    curve (the λ-range a straight line at the steepest slope needs for the whole change: about 1
    for a linear response, one grid spacing for a step, the grid's resolution), with a replica
    bootstrap interval (NaN with one replica).

    >>> lam = np.linspace(0, 1, 11)
    >>> w, lo, hi = transition_width(lam, np.tile(np.where(lam < 0.5, -1.0, 1.0), (3, 1)), n_boot=50)
    >>> round(w, 3), round(transition_width(lam, np.tile(2 * lam - 1, (3, 1)), n_boot=50)[0], 3)
    (0.1, 1.0)
    """
    lam = np.asarray(lams, dtype=float).ravel()
    A = np.atleast_2d(np.asarray(M, dtype=float))

    def width(curves: np.ndarray) -> np.ndarray:
        slopes = np.abs(np.diff(curves, axis=-1) / np.diff(lam))
        steep = np.nanmax(np.where(np.isfinite(slopes), slopes, np.nan), axis=-1)
        change = np.abs(curves[..., -1] - curves[..., 0])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(steep > 0, change / steep, np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns and curves
        w = float(width(np.nanmedian(A, axis=0)[None, :])[0])
        R = A.shape[0]
        if R < 2:
            return w, math.nan, math.nan
        rng = np.random.default_rng(seed)
        boot = width(np.nanmedian(A[rng.integers(0, R, size=(n_boot, R))], axis=1))
        boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return w, math.nan, math.nan
    q = (1 - level) / 2 * 100
    return w, float(np.percentile(boot, q)), float(np.percentile(boot, 100 - q))


def size_trend(widths: dict[int, Sequence[float | None]]) -> tuple[str, str]:
    """Does the transition narrow as the model grows? ``widths``: ``{size: [w, lo, hi]}``.

    ``narrows`` when the largest size's interval lies wholly below the smallest's; ``does not
    narrow`` when the largest's median is at or above the smallest's; else ``cannot tell``.

    >>> size_trend({32: [0.8, 0.6, 1.0], 64: [0.5, 0.3, 0.7], 128: [0.2, 0.1, 0.3]})[0]
    'narrows'
    >>> size_trend({32: [0.8, 0.6, 1.0], 128: [0.9, 0.7, 1.1]})[0]
    'does not narrow'
    """

    def num(x: float | None) -> float:
        return math.nan if x is None else float(x)

    ok = {s: [num(x) for x in w] for s, w in widths.items() if w and math.isfinite(num(w[0]))}
    if len(ok) < 2:
        return CANNOT_TELL, "fewer than 2 sizes with a defined width"
    small, large = ok[min(ok)], ok[max(ok)]
    text = f"width {large[0]:.3g} at size {max(ok)} against {small[0]:.3g} at size {min(ok)}"
    if large[2] < small[1]:  # NaN compares False: no interval, no claim
        return NARROWS, text + ": intervals apart (a transition sharpens as the system grows)"
    if large[0] >= small[0]:
        return WIDE, text + ": no narrowing (a crossover keeps its width)"
    return CANNOT_TELL, text + ": narrower, but the replica intervals overlap"
