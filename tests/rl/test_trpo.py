"""Tests of deepnotes.rl.trpo: CG, Fisher-vector products, GAE, the KL constraint, the bound."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from deepnotes.rl import trpo as T
from deepnotes.rl.envs import textbook_5x5


def _random_spd(n: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return m @ m.T + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("n", [1, 5, 30])
def test_conjugate_gradient_solves_random_spd_systems(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(5):
        A = _random_spd(n, gen)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        x = T.conjugate_gradient(lambda v, A=A: A @ v, b, iters=4 * n, tol=1e-24)
        # residual relative to ‖b‖; float64 CG on a condition number ≲ 1e5 reaches ~1e-10
        assert torch.linalg.norm(A @ x - b) <= 1e-8 * torch.linalg.norm(b)
        assert torch.allclose(x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-8)


def test_conjugate_gradient_exact_after_n_iterations_on_well_conditioned_system():
    gen = torch.Generator().manual_seed(0)
    n = 8
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    A = q @ torch.diag(torch.linspace(1.0, 3.0, n, dtype=torch.float64)) @ q.T
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    x = T.conjugate_gradient(lambda v: A @ v, b, iters=n, tol=0.0)
    assert torch.allclose(A @ x, b, atol=1e-10)
    with pytest.raises(ValueError, match="iters"):
        T.conjugate_gradient(lambda v: A @ v, b, iters=0)


def _flat_params_fn(policy):
    """A function of a flat parameter vector that evaluates ``policy.params`` functionally."""
    names = [n for n, _ in policy.named_parameters()]
    shapes = [p.shape for p in policy.parameters()]

    def unflatten(flat):
        out, i = {}, 0
        for name, s in zip(names, shapes, strict=True):
            k = int(np.prod(s))
            out[name] = flat[i:i + k].view(s)
            i += k
        return out
    return unflatten


def _small_policy(kind: str):
    torch.manual_seed(0)
    if kind == "categorical":
        pol = T.CategoricalPolicy(3, 4, hidden=(5,))
    else:
        pol = T.GaussianPolicy(3, 2, -np.ones(2), np.ones(2), hidden=(5,), log_std_init=-0.3)
    for p in pol.parameters():  # move away from the near-uniform orthogonal init
        p.data.add_(0.3 * torch.randn_like(p))
    return pol.double()


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_fisher_vector_product_equals_explicit_fisher(kind):
    pol = _small_policy(kind)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    theta = T.flat_params(pol)
    n = theta.numel()
    unflatten = _flat_params_fn(pol)

    # Explicit Fisher: E_s E_{a~π} [∇ log π(a|s) ∇ log π(a|s)ᵀ], by its closed form per family.
    def dist_params(flat):
        return _params_via(pol, unflatten(flat), obs)

    jac = torch.autograd.functional.jacobian(
        lambda f: torch.cat([t.reshape(-1) for t in dist_params(f)]), theta)
    with torch.no_grad():
        d = dist_params(theta)
    F = torch.zeros(n, n, dtype=torch.float64)
    B = obs.shape[0]
    if kind == "categorical":
        logp = d[0]
        A = logp.shape[1]
        J = jac.view(B, A, n)  # d log π(a|s) / dθ
        for s in range(B):
            p = logp[s].exp()
            F += (J[s].T * p) @ J[s]
    else:
        mean, log_std = d
        k = mean.shape[1]
        J = jac.view(2, B, k, n)  # [mean; log σ] jacobians
        for s in range(B):
            # Fisher of N(μ, diag σ²) in (μ, log σ): diag(1/σ²) and 2·I
            F += (J[0, s].T * (1 / (2 * log_std[s]).exp())) @ J[0, s] + 2 * J[1, s].T @ J[1, s]
    F /= B
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    fvp = T.fisher_vector_product(pol, obs, v)
    assert torch.allclose(fvp, F @ v, rtol=1e-8, atol=1e-10)
    assert torch.allclose(T.fisher_vector_product(pol, obs, v, damping=0.5), F @ v + 0.5 * v,
                          rtol=1e-8, atol=1e-10)
    # the reusable form (one first-derivative graph, many products) gives the same products
    fvp = T.fisher_vector_product_fn(pol, obs)
    for w in (v, torch.randn(n, generator=gen, dtype=torch.float64)):
        assert torch.allclose(fvp(w), F @ w, rtol=1e-8, atol=1e-10)


def _params_via(pol, params, obs):
    """``pol.params(obs)`` evaluated with the parameters ``params`` (name -> tensor)."""

    class _Wrap(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            return self.p.params(x)
    return torch.func.functional_call(_Wrap(pol), {"p." + k: v for k, v in params.items()},
                                      (obs,))


def _brute_force_gae(r, v, v_next, term, done, gamma, lam):
    """Â_t = Σ_l (γλ)^l δ_{t+l} over the rest of t's episode (and of the rollout)."""
    T_ = len(r)
    delta = [r[t] + gamma * (0.0 if term[t] else v_next[t]) - v[t] for t in range(T_)]
    out = np.zeros(T_)
    for t in range(T_):
        total, l = 0.0, 0
        while t + l < T_:
            total += (gamma * lam) ** l * delta[t + l]
            if done[t + l]:
                break
            l += 1
        out[t] = total
    return out


def test_gae_equals_its_definition():
    rng = np.random.default_rng(0)
    n = 40
    r, v, v_next = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    done = rng.random(n) < 0.15
    term = done & (rng.random(n) < 0.5)  # some episodes terminate, others are truncated
    for gamma, lam in [(0.99, 0.95), (0.9, 0.0), (0.8, 1.0), (1.0, 0.5)]:
        adv, ret = T.gae(r, v, v_next, term, done, gamma, lam)
        assert np.allclose(adv, _brute_force_gae(r, v, v_next, term, done, gamma, lam))
        assert np.allclose(ret, adv + v)


def test_gae_lambda_one_is_monte_carlo_return_minus_value():
    # One episode that terminates: with λ = 1 the advantage is G_t - V(s_t).
    r = np.array([1.0, 2.0, -1.0, 0.5])
    v = np.array([0.3, -0.2, 0.7, 0.1])
    v_next = np.array([-0.2, 0.7, 0.1, 99.0])  # the terminal next value must be ignored
    term = done = np.array([False, False, False, True])
    gamma = 0.9
    G = np.array([sum(gamma**k * r[t + k] for k in range(4 - t)) for t in range(4)])
    adv, _ = T.gae(r, v, v_next, term, done, gamma, 1.0)
    assert np.allclose(adv, G - v)
    with pytest.raises(ValueError, match="gamma"):
        T.gae(r, v, v_next, term, done, 1.5, 0.9)
    with pytest.raises(ValueError, match="shape"):
        T.gae(r, v[:3], v_next, term, done, 0.9, 0.9)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_every_accepted_step_satisfies_the_kl_constraint(env_id):
    torch.set_num_threads(1)
    max_kl = 0.005
    seen: list[dict] = []
    res = T.trpo(env_id, 1200, seed=3, n_steps=300, max_kl=max_kl, vf_epochs=2,
                 eval_episodes=1, callback=lambda i, s: seen.append(dict(s)))
    assert len(seen) == 4 and res.history["kl"].shape == (4,)
    assert res.history["accepted"].sum() >= 1
    for s in seen:
        if s["accepted"]:
            assert 0 < s["kl"] <= max_kl and s["surrogate_gain"] > 0
    assert res.eval_returns.shape == (1, 1)
    obs = 10 * torch.randn(64, res.policy.net[0].in_features)
    with torch.no_grad():
        a = res.policy(obs).numpy()
    space = gym.make(env_id).action_space
    assert all(space.contains(x.astype(space.dtype)) for x in a)


@pytest.mark.parametrize("max_kl", [1e-2, 1e-5])
def test_trpo_step_kl_matches_recomputed_kl_and_step_scale(max_kl):
    pol = _small_policy("categorical")
    gen = torch.Generator().manual_seed(2)
    obs = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    act = torch.randint(0, 4, (64,), generator=gen)
    adv = torch.randn(64, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        old = tuple(t.clone() for t in pol.params(obs))
    stats = T.trpo_step(pol, obs, act, adv, max_kl=max_kl, cg_iters=200, cg_damping=0.0)
    assert stats["accepted"] == 1.0
    with torch.no_grad():
        kl = float(T.mean_kl(pol, obs, old))
    assert kl == pytest.approx(stats["kl"], rel=1e-9) and kl <= max_kl
    if max_kl == 1e-5:
        # Eq. 8 makes the quadratic KL model of the full step equal δ; for a step this small
        # the model is accurate, so the kept fraction f has KL ≈ f²δ (cubic terms: a few %).
        assert stats["step_fraction"] ** 2 * max_kl == pytest.approx(kl, rel=0.1)


class _MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.MultiDiscrete([2, 3])


def test_bad_spaces_raise_clear_errors():
    with pytest.raises(TypeError, match="Discrete .* or Box"):
        T.trpo(_MultiDiscreteEnv(), 10)
    env = _MultiDiscreteEnv()
    env.action_space = gym.spaces.Discrete(2)
    env.observation_space = gym.spaces.Discrete(4)
    with pytest.raises(TypeError, match="Box observation"):
        T.make_policy(env)
    env.observation_space = gym.spaces.Box(-1, 1, (2,))
    env.action_space = gym.spaces.Box(-np.inf, np.inf, (1,))
    with pytest.raises(ValueError, match="finite"):
        T.make_policy(env)
    with pytest.raises(TypeError, match="unknown hyper-parameter"):
        T.trpo("CartPole-v1", 10, lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        T.trpo("CartPole-v1", 0)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_improvement_bound_holds_and_surrogate_is_first_order_exact():
    env = textbook_5x5()
    rng = np.random.default_rng(0)
    S, A = env.R.shape
    for _ in range(50):
        logits = rng.normal(size=(S, A))
        pi = _softmax(logits)
        pi_new = _softmax(logits + rng.normal(scale=rng.uniform(0.01, 2.0), size=(S, A)))
        b = T.improvement_bound(env, pi, pi_new)
        # Theorem 1 (and its KL corollary) hold for any pair of policies
        assert b["eta_new"] >= b["bound_tv"] - 1e-9
        assert b["bound_tv"] >= b["bound_kl"] - 1e-9
        assert b["tv_max"] ** 2 <= b["kl_max"] + 1e-12
    # L matches η to first order: |η(π̃) - L(π̃)| = O(‖Δ‖²)
    logits = rng.normal(size=(S, A))
    pi = _softmax(logits)
    direction = rng.normal(size=(S, A))
    gaps = []
    for h in (1e-2, 5e-3):
        s = T.surrogate_exact(env, pi, _softmax(logits + h * direction))
        gaps.append(abs(s["eta_new"] - s["surrogate"]))
        assert T.surrogate_exact(env, pi, pi)["surrogate"] == pytest.approx(s["eta"])
    assert gaps[1] < 0.3 * gaps[0]  # halving h quarters the gap (second order)
