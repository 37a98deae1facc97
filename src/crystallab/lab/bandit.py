"""The bandit null of the RL escape experiment: the same GRPO update on a tabular softmax policy.

The lab fine-tunes a model with SFT (answer distribution ``q_sft`` over K options), then runs
TRL's GRPO with a reward chosen without looking at the SFT support (a fixed random utility per
option, a diversity bonus, or validity only). Escape is ``1 - ρ``, ρ the excess retention of
the 90 % support set S of ``q_sft`` (:func:`crystallab.metrics.excess_retention`).

The null asks how much a learner *could* escape given only what GRPO itself explores: a
tabular policy ``π = softmax(θ)`` started at ``θ0 = log q_sft`` (floored at ``1e-8`` and
renormalised, so options SFT never produces stay reachable only in principle), trained by the
update TRL's ``GRPOTrainer`` makes, with the network run's group size, prompts per step,
learning rate, KL weight and number of steps. Each step:

1. draws ``prompts_per_step`` groups of ``group_size`` options from π (temperature 1);
2. sums the reward functions with weight 1 (TRL's ``multi_objective_aggregation =
   "sum_then_normalize"``, ``reward_weights=None``);
3. takes the group-normalised advantage ``A_i = (r_i - mean_group) / (std_group + 1e-4)``,
   std with Bessel's correction (TRL's ``nanstd``; ``scale_rewards="group"``, the default;
   ``"batch"`` and ``"none"`` are there too);
4. descends ``loss = mean_i [-A_i log π(a_i) + β k3_i]`` with TRL's k3 estimator
   ``k3_i = exp(log π_ref(a_i) - log π(a_i)) - (log π_ref(a_i) - log π(a_i)) - 1``, skipped when
   ``β = 0``; ``π_ref = softmax(θ0)``. With ``kl_bias_correction`` (TRL's
   ``use_bias_correction_kl``, on by default) ``k3_i`` is multiplied by the importance ratio
   ``exp(log π - stop_grad(log π))``, 1 in value, which turns the per-sample KL gradient into
   ``(log π(a_i) - log π_ref(a_i)) ∇log π(a_i)``, unbiased for ``∇KL(π || π_ref)``; without it
   the gradient is ``(1 - π_ref(a_i)/π(a_i)) ∇log π(a_i)``, whose mean is ``π - π_ref``
   (the gradient of ``KL(π_ref || π)``);
5. steps θ with AdamW (TRL's default optimiser: betas (0.9, 0.999), eps 1e-8, no weight decay
   in this tabular case, constant learning rate as :func:`crystallab.lab.rl.run_grpo` sets)
   or plain SGD.

One optimiser step per generated batch (``num_iterations=1``), so the clipped ratio is 1 and
the policy term's gradient is ``-A_i ∇log π(a_i)`` exactly. With one "token" per completion,
TRL's loss normalisations (``"dapo"``, the default, over the batch's tokens; ``"grpo"``, per
sequence then mean) both come to the mean over completions.

This is an approximation, and a generous one. A tabular policy's learning rate acts on the
logits directly: every step moves exactly the sampled options' logits, by an amount set by
the learning rate alone, whereas the network's learning rate acts on weights and reaches the
logits through the network (shared across options, prompts and tokens; clipped gradient norm;
multi-token answers). The same learning rate is not the same logit step, so the null is
"limited exploration of an ideal learner with the same update": what sampling from ``q_sft``
lets a learner find, with no generalisation between options and no capacity limits. Further
differences: no invalid option ⊥ is modelled, so with all K options valid the ``validity``
reward is constant, every advantage is 0 and nothing moves (except the KL term, which is 0 at
``π = π_ref``); the lab's ``diversity`` reward groups completions by prompt text (two groups
sharing an instruction count together), here each group is its own.

``expected=True`` replaces the samples with the exact expected gradient of the infinite-group
limit without normalisation: advantage ``r(a) - E_π[r]``, diversity ``r(a) = 1 - π(a)`` (the
share of an infinite group giving ``a``), KL gradient its exact mean. (With a finite group and
``scale_rewards="none"``, the baseline includes the sample itself, so the sampled policy
gradient's mean is ``(G - 1)/G`` times this one.)

>>> q = place_mass([0.7, 0.2, 0.1, 0.0], option=3, m0=0.05)
>>> q.round(4).tolist()
[0.665, 0.19, 0.095, 0.05]
>>> out = escape_null(q, ["utility"], BanditGRPO(learning_rate=0.05), utility=[0.0, 0.0, 0.0, 1.0], runs=50)
>>> sorted(out)
['escape', 'q_final_mean', 'rho', 'rho_sft', 'runs', 'support']
>>> out["escape"][0] > 0.0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from crystallab.metrics import excess_retention, support_set

REWARDS = ("utility", "validity", "diversity")
OPTIMIZERS = ("adam", "sgd")
SCALES = ("group", "batch", "none")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, which transformers' Trainer keeps
ADAM_EPS = 1e-8
STD_EPS = 1e-4  # TRL: advantages / (std_rewards + 1e-4)


@dataclass(frozen=True)
class BanditGRPO:
    """The GRPO settings the bandit shares with the network run (TRL's names in brackets).

    ``group_size`` (``num_generations``), ``prompts_per_step`` (groups per optimiser step),
    ``learning_rate``, ``beta`` (KL weight), ``steps`` (``max_steps``), ``optimizer``
    (``"adam"``, TRL's AdamW without weight decay, or ``"sgd"``), ``scale_rewards``,
    ``kl_bias_correction`` (``use_bias_correction_kl``) and ``floor``, the least mass an option
    keeps in ``θ0 = log q``.

    >>> BanditGRPO(learning_rate=0.05).learning_rate
    0.05
    >>> BanditGRPO(group_size=1)
    Traceback (most recent call last):
    ...
    ValueError: group_size must be >= 2 (a group of one has no spread), got 1
    """

    group_size: int = 8
    prompts_per_step: int = 2
    learning_rate: float = 1e-4
    beta: float = 0.04
    steps: int = 40
    optimizer: str = "adam"
    scale_rewards: str = "group"
    kl_bias_correction: bool = True
    floor: float = 1e-8

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a group of one has no spread), got {self.group_size}")
        if self.prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {self.prompts_per_step}")
        if not (self.learning_rate >= 0.0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be finite and >= 0, got {self.learning_rate}")
        if not (self.beta >= 0.0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be finite and >= 0, got {self.beta}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.scale_rewards not in SCALES:
            raise ValueError(f"scale_rewards must be one of {', '.join(SCALES)}, got {self.scale_rewards!r}")
        if not 0.0 < self.floor < 1.0:
            raise ValueError(f"floor must be in (0, 1), got {self.floor}")


# --------------------------------------------------------------------------------------------
# the seed-blind reward and the rewarded option's SFT mass


def utility_for(seed: int, k: int) -> np.ndarray:
    """The fixed random utility per option, ``default_rng(seed).uniform(0, 1, k)``: a reward
    chosen without looking at the SFT support, shared by the network GRPO run and the bandit.

    >>> utility_for(0, 4).round(3).tolist()
    [0.637, 0.27, 0.041, 0.017]
    >>> rewarded_option(utility_for(0, 4))
    0
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    return np.random.default_rng(seed).uniform(0.0, 1.0, int(k))


def rewarded_option(utility: ArrayLike) -> int:
    """The option the utility rewards most (the first of ties).

    >>> rewarded_option([0.2, 0.9, 0.9])
    1
    """
    u = np.asarray(utility, dtype=float)
    if u.ndim != 1 or u.size == 0 or not np.all(np.isfinite(u)):
        raise ValueError(f"utility must be a non-empty finite 1-D vector, got {u!r}")
    return int(np.argmax(u))


def place_mass(q: ArrayLike, option: int, m0: float) -> np.ndarray:
    """``q`` with ``option`` given mass exactly ``m0`` and the other options scaled in proportion
    to keep the total at 1 (spread evenly when they had none).

    >>> place_mass([0.5, 0.3, 0.2], option=2, m0=0.6).round(4).tolist()
    [0.25, 0.15, 0.6]
    >>> place_mass([0.5, 0.5], option=0, m0=1.0)
    Traceback (most recent call last):
    ...
    ValueError: m0 must be in (0, 1), got 1.0
    """
    p = _distribution(q, "q")
    if not 0.0 < m0 < 1.0:
        raise ValueError(f"m0 must be in (0, 1), got {m0}")
    if p.size < 2:
        raise ValueError("place_mass needs at least two options")
    if int(option) != option or not 0 <= option < p.size:
        raise ValueError(f"option must be an index in [0, {p.size}), got {option}")
    option = int(option)
    rest = np.delete(p, option)
    rest = rest / rest.sum() if rest.sum() > 0.0 else np.full(rest.size, 1.0 / rest.size)
    out = np.insert(rest * (1.0 - m0), option, 0.0)
    out[option] = m0
    return out


# --------------------------------------------------------------------------------------------
# the GRPO step on logits


def initial_logits(q0: ArrayLike, floor: float = 1e-8) -> np.ndarray:
    """``θ0 = log q0``, ``q0`` clipped at ``floor`` and renormalised first.

    >>> np.exp(initial_logits([0.5, 0.5, 0.0])).round(6).tolist()
    [0.5, 0.5, 0.0]
    """
    p = _distribution(q0, "q0")
    p = np.clip(p, floor, None)
    return np.log(p / p.sum())


def log_softmax(theta: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` (the last axis).

    >>> np.exp(log_softmax(np.log(np.array([[1.0, 3.0]])))).round(12).tolist()
    [[0.25, 0.75]]
    """
    m = theta.max(axis=-1, keepdims=True)
    z = theta - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def group_rewards(actions: np.ndarray, rewards: Sequence[str], utility: np.ndarray | None = None) -> np.ndarray:
    """The summed reward of each sampled option, ``actions`` shaped ``(..., groups, G)``.

    ``utility``: ``u[a]``; ``validity``: 1 (every option is valid here); ``diversity``:
    ``1 -`` the share of the group that gave the same answer (as the lab's reward).

    >>> group_rewards(np.array([[0, 0, 1, 2]]), ["diversity"]).tolist()
    [[0.5, 0.5, 0.75, 0.75]]
    >>> group_rewards(np.array([[0, 0, 1, 2]]), ["utility", "validity"], utility=np.array([0.0, 0.5, 1.0])).tolist()
    [[1.0, 1.0, 1.5, 2.0]]
    """
    a = np.asarray(actions)
    utility = None if utility is None else np.asarray(utility, dtype=float)
    names = _reward_names(rewards, utility)
    total = np.zeros(a.shape, dtype=float)
    for name in names:
        if name == "utility":
            assert utility is not None
            total += utility[a]
        elif name == "validity":
            total += 1.0
        else:  # diversity
            same = (a[..., :, None] == a[..., None, :]).sum(axis=-1)
            total += 1.0 - same / a.shape[-1]
    return total


def advantages(rewards: np.ndarray, scale_rewards: str = "group") -> np.ndarray:
    """TRL's advantages for rewards shaped ``(..., groups, G)``: ``r - mean_group``, divided by
    ``std + 1e-4`` (Bessel-corrected std of the group, or of the whole step for ``"batch"``).

    >>> advantages(np.array([[1.0, 0.0]])).round(6).tolist()
    [[0.707007, -0.707007]]
    >>> advantages(np.array([[1.0, 1.0, 1.0]])).tolist()
    [[0.0, 0.0, 0.0]]
    """
    r = np.asarray(rewards, dtype=float)
    shifted = r - r.min(axis=-1, keepdims=True)  # the same advantages; a constant group gives exactly 0
    centred = shifted - shifted.mean(axis=-1, keepdims=True)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        std = r.std(axis=-1, ddof=1, keepdims=True)
    elif scale_rewards == "batch":
        flat = r.reshape(r.shape[:-2] + (-1,))
        std = flat.std(axis=-1, ddof=1)[..., None, None]
    else:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALES)}, got {scale_rewards!r}")
    return centred / (std + STD_EPS)


def grpo_gradient(
    theta: np.ndarray,
    theta_ref: np.ndarray,
    actions: np.ndarray,
    adv: np.ndarray,
    beta: float,
    kl_bias_correction: bool = True,
) -> np.ndarray:
    """The gradient in ``θ`` (shape ``(runs, K)``) of TRL's GRPO loss on sampled ``actions``
    with advantages ``adv`` (both ``(runs, groups, G)``):
    ``mean_i [-A_i log π(a_i) + β k3_i]``, ``∇ log π(a) = e_a - π``.

    >>> th = np.zeros((1, 2))
    >>> grpo_gradient(th, th, np.array([[[0, 1]]]), np.array([[[1.0, -1.0]]]), beta=0.0).tolist()
    [[-0.5, 0.5]]
    """
    logp = log_softmax(theta)
    pi = np.exp(logp)
    K = theta.shape[-1]
    a = actions.reshape(actions.shape[0], -1)
    n = a.shape[1]
    weight = -np.asarray(adv, dtype=float).reshape(a.shape)
    if beta != 0.0:
        lp = np.take_along_axis(logp, a, axis=1)
        lr = np.take_along_axis(log_softmax(theta_ref), a, axis=1)
        # d k3 / d log π = 1 - π_ref/π; with the (value 1) importance ratio, + k3 itself
        dkl = lp - lr if kl_bias_correction else 1.0 - np.exp(lr - lp)
        weight = weight + beta * dkl
    onehot = np.zeros((a.shape[0], n, K))
    np.put_along_axis(onehot, a[..., None], 1.0, axis=2)
    hits = np.einsum("rn,rnk->rk", weight, onehot)
    return (hits - weight.sum(axis=1, keepdims=True) * pi) / n


def expected_gradient(
    theta: np.ndarray,
    theta_ref: np.ndarray,
    rewards: Sequence[str],
    beta: float,
    utility: np.ndarray | None = None,
    kl_bias_correction: bool = True,
) -> np.ndarray:
    """The infinite-group, unnormalised limit of :func:`grpo_gradient`:
    ``-π ⊙ (r - E_π r) + β ∇KL``, ``∇KL = π ⊙ (l - E_π l)``, ``l = log π - log π_ref`` (bias
    corrected), else ``π - π_ref``; diversity ``r(a) = 1 - π(a)``.

    >>> expected_gradient(np.zeros((1, 2)), np.zeros((1, 2)), ["utility"], 0.0, utility=np.array([1.0, 0.0])).tolist()
    [[-0.25, 0.25]]
    """
    utility = None if utility is None else np.asarray(utility, dtype=float)
    names = _reward_names(rewards, utility)
    logp = log_softmax(theta)
    pi = np.exp(logp)
    r = np.zeros_like(pi)
    for name in names:
        if name == "utility":
            assert utility is not None
            r = r + utility[None, :]
        elif name == "validity":
            r = r + 1.0
        else:
            r = r + 1.0 - pi
    r = r - r.min(axis=1, keepdims=True)  # a constant reward centres to exactly 0 (no rounding residue)
    grad = -pi * (r - (pi * r).sum(axis=1, keepdims=True))
    if beta != 0.0:
        logr = log_softmax(theta_ref)
        if kl_bias_correction:
            ell = logp - logr
            grad = grad + beta * pi * (ell - (pi * ell).sum(axis=1, keepdims=True))
        else:
            grad = grad + beta * (pi - np.exp(logr))
    return grad


class _Optimiser:
    """SGD, or torch's AdamW step (``weight_decay=0``) vectorised over runs."""

    def __init__(self, kind: str, lr: float, shape: tuple[int, ...]) -> None:
        self.kind, self.lr, self.t = kind, lr, 0
        self.m, self.v = np.zeros(shape), np.zeros(shape)

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.kind == "sgd":
            return theta - self.lr * grad
        b1, b2 = ADAM_BETAS
        self.t += 1
        self.m = b1 * self.m + (1.0 - b1) * grad
        self.v = b2 * self.v + (1.0 - b2) * grad * grad
        denom = np.sqrt(self.v) / math.sqrt(1.0 - b2**self.t) + ADAM_EPS
        return theta - (self.lr / (1.0 - b1**self.t)) * self.m / denom


def simulate(
    q0: ArrayLike,
    rewards: Sequence[str],
    settings: BanditGRPO,
    utility: ArrayLike | None = None,
    seed: int = 0,
    runs: int = 1,
    expected: bool = False,
) -> np.ndarray:
    """The final policy of each of ``runs`` independent GRPO runs, shape ``(runs, K)``.

    ``expected=True`` uses :func:`expected_gradient` (deterministic; every run the same).
    Runs share one random stream, so a run's draws depend on ``runs`` as well as ``seed``.

    >>> s = BanditGRPO(learning_rate=0.1, beta=0.0, steps=10, optimizer="sgd")
    >>> simulate([0.5, 0.5], ["validity"], s, runs=2).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    >>> pi = simulate([0.5, 0.5], ["utility"], s, utility=[1.0, 0.0], expected=True)
    >>> bool(pi[0, 0] > 0.6)
    True
    """
    if int(runs) != runs or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs}")
    theta0 = initial_logits(q0, settings.floor)
    K = theta0.size
    u = None if utility is None else _utility_vector(utility, K)
    _reward_names(rewards, u)
    theta_ref = np.broadcast_to(theta0, (int(runs), K))
    theta = theta_ref.copy()
    opt = _Optimiser(settings.optimizer, settings.learning_rate, theta.shape)
    rng = np.random.default_rng(seed)
    shape = (int(runs), settings.prompts_per_step, settings.group_size)
    for _ in range(settings.steps):
        if expected:
            grad = expected_gradient(theta, theta_ref, rewards, settings.beta, u, settings.kl_bias_correction)
        else:
            cdf = np.cumsum(np.exp(log_softmax(theta)), axis=1)
            draws = rng.random(shape)
            actions = np.minimum((draws[..., None] >= cdf[:, None, None, :]).sum(axis=-1), K - 1)
            adv = advantages(group_rewards(actions, rewards, u), settings.scale_rewards)
            grad = grpo_gradient(theta, theta_ref, actions, adv, settings.beta, settings.kl_bias_correction)
        theta = opt.step(theta, grad)
    return np.exp(log_softmax(theta))


def escape_null(
    q_sft: ArrayLike,
    rewards: Sequence[str],
    settings: BanditGRPO,
    utility: ArrayLike | None = None,
    seed: int = 0,
    runs: int = 200,
) -> dict[str, Any]:
    """The bandit's excess retention and escape over ``runs`` runs started at ``q_sft``.

    ``rho`` and ``escape`` (``1 - rho``) are ``[median, lo, hi]``, lo/hi the 2.5 % and 97.5 %
    quantiles over runs (NaN when S is every option); ``q_final_mean`` the mean final policy;
    ``support`` the option indices of S (90 % of ``q_sft``); ``rho_sft``, the excess retention of
    ``q_sft`` itself (where a policy that does not move stays: ρ is 1 only with all mass on S);
    ``runs``.

    >>> out = escape_null([0.6, 0.35, 0.05], ["validity"], BanditGRPO(), runs=3)
    >>> [round(v, 6) for v in out["rho"]], [round(v, 6) for v in out["escape"]], out["support"]
    ([0.85, 0.85, 0.85], [0.15, 0.15, 0.15], [0, 1])
    """
    q = _distribution(q_sft, "q_sft")
    final = simulate(q, rewards, settings, utility=utility, seed=seed, runs=runs)
    rho = np.array([excess_retention(q, p) for p in final])
    if np.isnan(rho).any():
        r3 = [math.nan] * 3
        e3 = [math.nan] * 3
    else:
        v, lo, hi = (float(x) for x in np.quantile(rho, [0.5, 0.025, 0.975]))
        r3, e3 = [v, lo, hi], [1.0 - v, 1.0 - hi, 1.0 - lo]
    return {
        "rho": r3,
        "escape": e3,
        "q_final_mean": final.mean(axis=0).tolist(),
        "support": sorted(int(i) for i in support_set(q, 0.9)),
        "rho_sft": excess_retention(q, q),
        "runs": int(runs),
    }


# --------------------------------------------------------------------------------------------
# input checks


def _distribution(q: ArrayLike, name: str) -> np.ndarray:
    p = np.asarray(q, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D distribution, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1, got {p.tolist()}")
    return p


def _utility_vector(utility: ArrayLike, k: int) -> np.ndarray:
    u = np.asarray(utility, dtype=float)
    if u.shape != (k,) or not np.all(np.isfinite(u)):
        raise ValueError(f"utility must be a finite vector of {k} values, got {u.tolist()}")
    return u


def _reward_names(rewards: Sequence[str], utility: np.ndarray | None) -> list[str]:
    names = [rewards] if isinstance(rewards, str) else list(rewards)
    if not names:
        raise ValueError(f"give at least one reward of {', '.join(REWARDS)}")
    for n in names:
        if n not in REWARDS:
            raise ValueError(f"unknown reward {n!r}; use {', '.join(REWARDS)}")
    if "utility" in names and utility is None:
        raise ValueError("the 'utility' reward needs a utility vector (see utility_for)")
    return names
