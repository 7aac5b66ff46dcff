"""DDPG/TD3: Polyak targets, replay ring buffer, noise processes, targets, action-space errors,
and the learned gain on a linear-quadratic task against the Riccati optimum."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from deepnotes.rl.actor_critic import lqr_optimal_gain
from deepnotes.rl.ddpg import (
    Actor,
    Critics,
    GaussianNoise,
    LinearQuadraticEnv,
    OrnsteinUhlenbeckNoise,
    ReplayBuffer,
    actor_loss,
    check_box_env,
    critic_target,
    ddpg,
    polyak_update,
    td3,
)


def test_polyak_update_equals_formula():
    torch.manual_seed(0)
    net, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    tau = 0.37
    polyak_update(net.parameters(), target.parameters(), tau)
    for p, old, new in zip(net.parameters(), before, target.parameters(), strict=True):
        torch.testing.assert_close(new, tau * p + (1 - tau) * old, rtol=0, atol=1e-7)
    polyak_update(net.parameters(), target.parameters(), 1.0)  # tau = 1 copies
    for p, new in zip(net.parameters(), target.parameters(), strict=True):
        assert torch.equal(p, new)
    with pytest.raises(ValueError, match="tau"):
        polyak_update(net.parameters(), target.parameters(), 1.5)


def test_polyak_repeated_is_geometric():
    # n updates toward a fixed θ leave θ' = θ + (1 − τ)^n (θ'₀ − θ)
    p, t = torch.tensor([2.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    for _ in range(10):
        polyak_update([p], [t], 0.1)
    assert t.item() == pytest.approx(2.0 + 0.9 ** 10 * (-3.0), abs=1e-12)


def test_replay_buffer_returns_what_was_stored_with_wraparound():
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    stored = []
    for i in range(12):  # wraps twice
        tr = (np.array([i, -i], np.float32), np.array([0.5 * i], np.float32), float(i) + 0.25,
              np.array([i + 1, -i - 1], np.float32), i % 3 == 0)
        buf.add(*tr)
        stored.append(tr)
        assert len(buf) == min(i + 1, 5)
    assert buf.pos == 12 % 5
    # slot j holds the newest transition written there: index i with i % 5 == j, i in 7..11
    for i in range(7, 12):
        got = buf.get(np.array([i % 5]))
        o, a, r, o2, d = stored[i]
        np.testing.assert_array_equal(got["obs"][0], o)
        np.testing.assert_array_equal(got["act"][0], a)
        assert got["rew"][0] == np.float32(r)
        np.testing.assert_array_equal(got["next_obs"][0], o2)
        assert got["terminated"][0] == float(d)
    batch = buf.sample(64, np.random.default_rng(0))
    assert set(batch["obs"][:, 0].astype(int)) <= set(range(7, 12))  # nothing overwritten leaks
    np.testing.assert_array_equal(batch["next_obs"], batch["obs"] + np.array([1, -1]))
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 1, 1).sample(1, np.random.default_rng(0))


def test_noise_processes():
    rng = np.random.default_rng(0)
    g = GaussianNoise(2, np.array([0.1, 2.0]), rng)
    x = np.stack([g() for _ in range(20_000)])
    np.testing.assert_allclose(x.std(0), [0.1, 2.0], rtol=0.03)
    # OU: stationary sd σ/√(2θ − θ²Δt) for the Euler recursion x ← (1 − θΔt) x + σ√Δt ε
    ou = OrnsteinUhlenbeckNoise(1, 0.3, np.random.default_rng(1), theta=0.15)
    xs = np.array([ou()[0] for _ in range(60_000)])[1000:]
    theta = 0.15
    assert xs.std() == pytest.approx(0.3 / np.sqrt(2 * theta - theta ** 2), rel=0.08)
    lag1 = np.corrcoef(xs[:-1], xs[1:])[0, 1]
    assert lag1 == pytest.approx(1 - theta, abs=0.02)  # temporally correlated, unlike Gaussian
    ou.reset()
    assert ou.x[0] == 0.0


def test_actor_stays_within_bounds():
    torch.manual_seed(0)
    low, high = np.array([-2.0, 0.0]), np.array([1.0, 5.0])
    actor = Actor(3, 2, low, high, hidden=(8,))
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(100)  # saturate the tanh
        a = actor(torch.randn(1000, 3) * 10)
    assert (a >= torch.tensor(low, dtype=torch.float32)).all()
    assert (a <= torch.tensor(high, dtype=torch.float32)).all()


def test_critic_target_formula_and_twin_minimum():
    torch.manual_seed(0)
    actor = Actor(2, 1, [-1.0], [1.0], hidden=(4,))
    critics = Critics(2, 1, n=2, hidden=(4,))
    s2 = torch.randn(6, 2)
    r, d = torch.randn(6), torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.float32)
    y = critic_target(actor, critics, r, s2, d, gamma=0.9)
    q = critics(s2, actor(s2)).detach()  # (2, 6)
    torch.testing.assert_close(y, r + 0.9 * (1 - d) * torch.minimum(q[0], q[1]))
    # smoothing noise stays within the clip and the action bounds
    g = torch.Generator().manual_seed(0)
    y_s = critic_target(actor, critics, r, s2, d, 0.9, target_noise=10.0, noise_clip=0.5,
                        generator=g)
    assert torch.isfinite(y_s).all() and not torch.equal(y_s, y)


def test_actor_loss_gradient_is_dpg():
    # ∇_θ of −Q(s, μ_θ(s)) equals −∇_a Q · ∇_θ μ (Eq. 1), formed by hand with autograd
    torch.manual_seed(0)
    actor = Actor(3, 2, [-1.0, -1.0], [1.0, 1.0], hidden=(5,))
    critics = Critics(3, 2, n=1, hidden=(7,))
    s = torch.randn(4, 3)
    grads = torch.autograd.grad(actor_loss(actor, critics, s), list(actor.parameters()))
    a = actor(s)
    a_leaf = a.detach().requires_grad_(True)
    dq_da = torch.autograd.grad(critics(s, a_leaf)[0].sum(), a_leaf)[0]  # (4, 2)
    by_hand = torch.autograd.grad(a, list(actor.parameters()), grad_outputs=-dq_da / 4)
    for g1, g2 in zip(grads, by_hand, strict=True):
        torch.testing.assert_close(g1, g2)


def test_action_space_errors():
    with pytest.raises(TypeError, match="Discrete"):
        ddpg(gym.make("CartPole-v1"), 10)
    unbounded = LinearQuadraticEnv()
    unbounded.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    with pytest.raises(ValueError, match="unbounded"):
        td3(unbounded, 10)
    with pytest.raises(TypeError, match="gymnasium.Env"):
        check_box_env("not an env")
    with pytest.raises(TypeError, match="unknown hyper-parameter"):
        ddpg(LinearQuadraticEnv(), 10, learning_rate=1e-3)


def test_lq_env_matches_its_equations():
    env = LinearQuadraticEnv(c=2.0, sigma=0.0, horizon=3)
    obs, _ = env.reset(seed=0)
    s = float(obs[0])
    obs2, r, term, trunc, _ = env.step(np.array([0.5], np.float32))
    assert r == pytest.approx(-(s * s + 2.0 * 0.25))
    assert obs2[0] == pytest.approx(s + 0.5, abs=1e-6) and not term and not trunc
    env.step(np.array([0.0]))
    assert env.step(np.array([0.0]))[3]  # truncated at the horizon, never terminated
    assert env.optimal_gain(0.9) == lqr_optimal_gain(0.9, 2.0)[0]


def test_short_run_result_shapes_and_determinism():
    env = LinearQuadraticEnv()
    kw = dict(hidden=(8,), batch_size=16, learning_starts=20, eval_every=50, eval_episodes=2)
    r1 = td3(env, 100, seed=3, **kw)
    r2 = td3(LinearQuadraticEnv(), 100, seed=3, **kw)
    assert r1.eval_steps.tolist() == [50, 100] and r1.eval_returns.shape == (2, 2)
    assert len(r1.episode_returns) == 5 and r1.episode_end_steps[-1] == 100
    assert len(r1.history["critic_loss"]) == 80 and len(r1.history["actor_loss"]) == 40
    np.testing.assert_array_equal(r1.eval_returns, r2.eval_returns)
    a = r1.actor(torch.zeros(3, 1))
    assert a.shape == (3, 1)


class QuadraticCritic(nn.Module):
    """Q(s, a) = w·(s², s a, a², s, a, 1): the family holding the exact Q of an affine policy on
    the LQ task, so the critic has no approximation error to hide behind."""

    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.w = nn.Parameter(0.1 * torch.randn(6))  # random: TD3's twins start apart

    def forward(self, x):
        s, a = x[:, 0], x[:, 1]
        feats = torch.stack([s * s, s * a, a * a, s, a, torch.ones_like(s)], -1)  # (B, 6)
        return (feats @ self.w)[:, None]


def test_lq_gain_reaches_the_riccati_optimum():
    # γ = 0.5, c = 1: k* = −(√2 − 1) ≈ −0.414. Episodes of one step from s₀ ~ U(−1, 1) keep the
    # replayed states O(1) (the quadratic features stay well conditioned for Adam) while
    # bootstrapping through the time limit keeps the problem infinite-horizon.
    gamma = 0.5
    env = LinearQuadraticEnv(c=1.0, sigma=0.1, horizon=1, action_bound=4.0)
    k_star = lqr_optimal_gain(gamma, 1.0)[0]
    # TD3 runs every piece DDPG runs, plus the three switches (DDPG alone: see the post; kept
    # out of the suite for CPU time).
    res = td3(env, 3000, seed=0, gamma=gamma, actor_hidden=(), critic_factory=QuadraticCritic,
               learning_starts=0, batch_size=128, tau=0.05, noise_sigma=0.25, actor_lr=1e-3,
               critic_lr=1e-2, eval_every=0, eval_episodes=1)
    s = torch.linspace(-0.5, 0.5, 21)[:, None]
    with torch.no_grad():
        a = res.actor(s)[:, 0]
    gain = float(np.polyfit(s[:, 0].numpy(), a.numpy(), 1)[0])  # slope of the tanh-linear actor
    # Tolerance 0.03 (about 7 % of |k*|): Adam's noise floor on the critic (step 1e-2 on
    # noisy TD targets) and the tanh curvature of the actor (errors observed in development:
    # DDPG 0.001, TD3 0.008 at 3000 steps; both about 0.04 at 2000 steps).
    assert abs(gain - k_star) < 0.03, (gain, k_star)
