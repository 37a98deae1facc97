"""The bandit null: closed forms, the advantage/KL formulas, escape against m0, inputs."""

from __future__ import annotations

import numpy as np
import pytest

from crystallab.lab.bandit import (
    BanditGRPO,
    advantages,
    escape_null,
    expected_gradient,
    group_rewards,
    grpo_gradient,
    initial_logits,
    log_softmax,
    place_mass,
    rewarded_option,
    simulate,
    utility_for,
)
from crystallab.metrics import excess_retention, support_set


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


# 1. closed forms --------------------------------------------------------------------------


def test_expected_sgd_two_options_follows_the_logit_difference_recursion():
    q0, lr, steps = [0.3, 0.7], 0.5, 25
    s = BanditGRPO(learning_rate=lr, beta=0.0, steps=steps, optimizer="sgd")
    x = np.log(0.3 / 0.7)
    trace = []
    for t in range(1, steps + 1):
        x = x + 2.0 * lr * _sigmoid(x) * (1.0 - _sigmoid(x))
        pi = simulate(
            q0,
            ["utility"],
            BanditGRPO(learning_rate=lr, beta=0.0, steps=t, optimizer="sgd"),
            utility=[1.0, 0.0],
            expected=True,
        )
        trace.append(abs(pi[0, 0] - _sigmoid(x)))
    assert max(trace) < 1e-12
    final = simulate(q0, ["utility"], s, utility=[1.0, 0.0], expected=True)
    assert abs(np.log(final[0, 0] / final[0, 1]) - x) < 1e-12
    assert final[0, 0] > 0.6  # it really moved


@pytest.mark.parametrize("expected", [True, False])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("correction", [True, False])
def test_kl_alone_keeps_the_policy_at_the_reference(expected, optimizer, correction):
    q0 = np.array([0.4, 0.3, 0.2, 0.1])
    s = BanditGRPO(learning_rate=0.5, beta=1.0, steps=30, optimizer=optimizer, kl_bias_correction=correction)
    pi = simulate(q0, ["validity"], s, runs=5, expected=expected, seed=3)
    ref = np.exp(log_softmax(initial_logits(q0)[None, :]))
    assert np.array_equal(pi, np.repeat(ref, 5, axis=0))
    assert np.abs(pi - q0).max() < 1e-15


@pytest.mark.parametrize("correction", [True, False])
def test_expected_kl_gradient_is_the_gradient_of_the_right_kl(correction):
    # with the importance-ratio correction (TRL's default) the k3 gradient is unbiased for
    # ∇KL(π || π_ref); without it its mean is π - π_ref = ∇KL(π_ref || π)
    rng = np.random.default_rng(0)
    theta, ref = rng.normal(size=(1, 4)), rng.normal(size=(1, 4))

    def kl(th: np.ndarray) -> float:
        lp, lr = log_softmax(th), log_softmax(ref)
        a, b = (lp, lr) if correction else (lr, lp)
        return float((np.exp(a) * (a - b)).sum())

    h = 1e-6
    numeric = np.array([[(kl(theta + h * e) - kl(theta - h * e)) / (2 * h) for e in np.eye(4)]])
    g = expected_gradient(theta, ref, ["validity"], beta=1.0, kl_bias_correction=correction)
    assert np.abs(g - numeric).max() < 1e-8


@pytest.mark.parametrize("correction", [True, False])
def test_sampled_kl_gradient_is_unbiased(correction):
    rng = np.random.default_rng(1)
    theta, ref = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    n = 400_000
    pi = np.exp(log_softmax(theta))[0]
    actions = rng.choice(3, size=(n, 1, 1), p=pi)
    per_sample = grpo_gradient(
        np.repeat(theta, n, 0),
        np.repeat(ref, n, 0),
        actions,
        np.zeros((n, 1, 1)),
        beta=1.0,
        kl_bias_correction=correction,
    )
    want = expected_gradient(theta, ref, ["validity"], beta=1.0, kl_bias_correction=correction)[0]
    se = per_sample.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(per_sample.mean(axis=0) - want) < 5 * se + 1e-12)


def test_advantage_is_trl_group_normalisation_with_bessel_std():
    r = np.array([[[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]]])
    a = advantages(r)
    std = np.sqrt(((r[0, 0] - 0.25) ** 2).sum() / 3)  # ddof=1, as TRL's nanstd
    assert np.allclose(a[0, 0], (r[0, 0] - 0.25) / (std + 1e-4), rtol=0, atol=1e-15)
    assert np.array_equal(a[0, 1], np.zeros(4))  # a constant group: advantage 0
    assert np.array_equal(advantages(r, "none")[0, 0], r[0, 0] - 0.25)
    batch_std = r.reshape(-1).std(ddof=1)
    assert np.allclose(advantages(r, "batch")[0, 0], (r[0, 0] - 0.25) / (batch_std + 1e-4), rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        advantages(r, "sometimes")


def test_grpo_gradient_by_hand():
    # one group of two at θ = 0 (π = ½, ½): options 0 and 1, advantages +A and -A
    th = np.zeros((1, 2))
    g = grpo_gradient(th, th, np.array([[[0, 1]]]), np.array([[[0.8, -0.8]]]), beta=0.0)
    # loss = -(A log π0 - A log π1)/2; ∂/∂θ0 = -(A(1 - ½) - A(0 - ½))/2 = -A/2
    assert np.allclose(g, [[-0.4, 0.4]], rtol=0, atol=1e-15)


def test_rewards_utility_diversity_validity_and_their_sum():
    a = np.array([[[0, 0, 0, 1]]])
    u = np.array([0.25, 1.0])
    assert group_rewards(a, ["utility"], u).tolist() == [[[0.25, 0.25, 0.25, 1.0]]]
    assert group_rewards(a, ["diversity"]).tolist() == [[[0.25, 0.25, 0.25, 0.75]]]
    assert group_rewards(a, ["validity"]).tolist() == [[[1.0] * 4]]
    both = group_rewards(a, ["utility", "diversity", "validity"], u)
    assert np.array_equal(both, [[[1.5, 1.5, 1.5, 2.75]]])
    # diversity is per group: the same options in another group do not count
    two = np.array([[[0, 1], [0, 0]]])
    assert group_rewards(two, ["diversity"]).tolist() == [[[0.5, 0.5], [0.0, 0.0]]]


# 2. validity only ------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_validity_only_leaves_the_policy_at_q0(optimizer):
    q0 = np.array([0.55, 0.25, 0.15, 0.05])
    s = BanditGRPO(learning_rate=0.3, steps=40, optimizer=optimizer)
    pi = simulate(q0, ["validity"], s, runs=20, seed=7)
    assert np.abs(pi - q0).max() < 1e-15
    out = escape_null(q0, ["validity"], s, runs=20)
    assert out["rho"] == pytest.approx([out["rho_sft"]] * 3, abs=1e-12)


def test_a_diversity_reward_does_move_the_policy():  # the contrast to validity: spread is rewarded
    q0 = np.array([0.7, 0.2, 0.1])
    pi = simulate(q0, ["diversity"], BanditGRPO(learning_rate=0.05, steps=40), runs=200)
    assert pi.mean(axis=0)[0] < 0.6


# 3. escape grows with the rewarded option's SFT mass -----------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_escape_grows_with_the_rewarded_options_initial_mass(optimizer):
    base, option = [0.5, 0.45, 0.02, 0.02, 0.01], 4
    u = [0.0, 0.0, 0.0, 0.0, 1.0]
    s = BanditGRPO(learning_rate=0.05, steps=40, optimizer=optimizer)
    small, larger = place_mass(base, option, 0.001), place_mass(base, option, 0.05)
    # both keep the rewarded option outside the 90 % support, so moving mass onto it is escape
    assert option not in support_set(small).tolist() and option not in support_set(larger).tolist()
    e_small = escape_null(small, ["utility"], s, utility=u, runs=200)
    e_larger = escape_null(larger, ["utility"], s, utility=u, runs=200)
    assert e_larger["escape"][0] > e_small["escape"][0] + 0.05
    assert e_larger["q_final_mean"][option] > 0.05  # it grew from its SFT mass
    assert e_small["q_final_mean"][option] < 0.01  # rarely sampled: barely found
    # with m0 = 0.3 the rewarded option is inside S (the other options hold 0.7 < 0.9), so
    # rewarding it is retention, not escape: escape need not grow past the support's edge
    assert option in support_set(place_mass(base, option, 0.3)).tolist()


# 4. Monte-Carlo against the expected gradient --------------------------------------------


def test_sampled_mode_matches_the_expected_mode_on_average():
    q0, u, G, lr, steps = [0.5, 0.3, 0.2], [0.0, 1.0, 0.5], 4, 0.2, 20
    s = BanditGRPO(group_size=G, learning_rate=lr, beta=0.0, steps=steps, optimizer="sgd", scale_rewards="none")
    mc = simulate(q0, ["utility"], s, utility=u, runs=4000, seed=1).mean(axis=0)
    # the group mean includes the sample itself, so the sampled gradient's mean is (G-1)/G of
    # the infinite-group one
    adjusted = BanditGRPO(learning_rate=lr * (G - 1) / G, beta=0.0, steps=steps, optimizer="sgd")
    ex = simulate(q0, ["utility"], adjusted, utility=u, expected=True)[0]
    assert np.abs(mc - ex).max() < 0.005
    raw = simulate(
        q0, ["utility"], BanditGRPO(learning_rate=lr, beta=0.0, steps=steps, optimizer="sgd"), utility=u, expected=True
    )[0]
    assert np.abs(mc - raw).max() > 0.03  # the factor is real, not within the tolerance


def test_expected_mode_is_the_same_for_every_run():
    pi = simulate(
        [0.6, 0.4], ["utility", "diversity"], BanditGRPO(learning_rate=0.1), utility=[0.0, 1.0], runs=3, expected=True
    )
    assert np.array_equal(pi[0], pi[1]) and np.array_equal(pi[1], pi[2])


# 5. place_mass, utility_for and bad inputs ------------------------------------------------


def test_place_mass_sets_the_mass_and_keeps_the_rest_proportional():
    q = np.array([0.5, 0.3, 0.2, 0.0])
    for option, m0 in [(3, 0.001), (0, 0.3), (2, 0.9)]:
        p = place_mass(q, option, m0)
        assert p[option] == m0
        assert abs(p.sum() - 1.0) < 1e-15
        rest, old = np.delete(p, option), np.delete(q, option)
        assert np.allclose(rest, old / old.sum() * (1.0 - m0), rtol=0, atol=1e-15)
    assert place_mass([0.0, 1.0, 0.0], 1, 0.4).tolist() == [0.3, 0.4, 0.3]  # nothing else: spread evenly


@pytest.mark.parametrize("m0", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_place_mass_rejects_m0_outside_the_open_interval(m0):
    with pytest.raises(ValueError):
        place_mass([0.5, 0.5], 0, m0)


@pytest.mark.parametrize(
    "q, option",
    [
        ([0.5, 0.5], 2),
        ([0.5, 0.5], -1),
        ([0.5, 0.5], 0.5),
        ([0.5, 0.6], 0),
        ([1.2, -0.2], 0),
        ([[0.5, 0.5]], 0),
        ([1.0], 0),
    ],
)
def test_place_mass_rejects_bad_distributions_and_options(q, option):
    with pytest.raises(ValueError):
        place_mass(q, option, 0.1)


def test_utility_for_is_a_seeded_uniform_vector():
    u = utility_for(5, 10)
    assert u.shape == (10,) and np.all((u >= 0.0) & (u < 1.0))
    assert np.array_equal(u, np.random.default_rng(5).uniform(0.0, 1.0, 10))
    assert np.array_equal(u, utility_for(5, 10)) and not np.array_equal(u, utility_for(6, 10))
    assert rewarded_option(u) == int(np.argmax(u))
    assert rewarded_option([0.1, 0.7, 0.7, 0.2]) == 1
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError):
            utility_for(0, bad)
    for bad_u in ([], [0.1, float("nan")], [[0.1, 0.2]]):
        with pytest.raises(ValueError):
            rewarded_option(bad_u)


@pytest.mark.parametrize(
    "kw",
    [
        dict(group_size=1),
        dict(prompts_per_step=0),
        dict(learning_rate=-1.0),
        dict(beta=-0.1),
        dict(steps=-1),
        dict(optimizer="rmsprop"),
        dict(scale_rewards="sometimes"),
        dict(floor=0.0),
    ],
)
def test_bad_settings_raise(kw):
    with pytest.raises(ValueError):
        BanditGRPO(**kw)


def test_bad_rewards_and_utilities_raise():
    s = BanditGRPO(steps=2)
    with pytest.raises(ValueError, match="unknown reward"):
        simulate([0.5, 0.5], ["target"], s)
    with pytest.raises(ValueError, match="at least one"):
        simulate([0.5, 0.5], [], s)
    with pytest.raises(ValueError, match="utility"):
        simulate([0.5, 0.5], ["utility"], s)
    with pytest.raises(ValueError, match="utility"):
        simulate([0.5, 0.5], ["utility"], s, utility=[1.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        simulate([0.5, 0.5], ["validity"], s, runs=0)
    with pytest.raises(ValueError):
        simulate([0.5, 0.4], ["validity"], s)


# 6. reproducible, and escape_null's summary -----------------------------------------------


def test_simulate_is_reproducible_with_a_seed():
    args = ([0.6, 0.3, 0.1], ["utility", "diversity"], BanditGRPO(learning_rate=0.05))
    kw = dict(utility=utility_for(2, 3), runs=50)
    a, b = simulate(*args, seed=11, **kw), simulate(*args, seed=11, **kw)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, simulate(*args, seed=12, **kw))
    assert escape_null(*args, utility=kw["utility"], seed=4) == escape_null(*args, utility=kw["utility"], seed=4)


def test_escape_null_summarises_excess_retention_over_runs():
    q = place_mass([0.6, 0.35, 0.05, 0.0], 3, 0.02)
    u = [0.0, 0.0, 0.0, 1.0]
    s = BanditGRPO(learning_rate=0.05)
    out = escape_null(q, ["utility"], s, utility=u, runs=100, seed=2)
    rho = np.array([excess_retention(q, p) for p in simulate(q, ["utility"], s, utility=u, runs=100, seed=2)])
    v, lo, hi = out["rho"]
    assert v == pytest.approx(np.median(rho)) and lo <= v <= hi
    assert lo == pytest.approx(np.quantile(rho, 0.025)) and hi == pytest.approx(np.quantile(rho, 0.975))
    assert out["escape"] == pytest.approx([1 - v, 1 - hi, 1 - lo])
    assert sum(out["q_final_mean"]) == pytest.approx(1.0) and out["runs"] == 100
    assert out["support"] == [0, 1] and out["rho_sft"] == pytest.approx(excess_retention(q, q))
    # S = every option: nothing to escape to
    assert all(np.isnan(escape_null([0.5, 0.5], ["validity"], s, runs=3)["rho"]))
