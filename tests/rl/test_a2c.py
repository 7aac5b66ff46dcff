"""Tests of deepnotes.rl.a2c: the rollout targets, the loss, learning on CartPole, bad spaces."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from deepnotes.rl import a2c as A


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread (two threads on a loaded two-core machine spin)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _lambda_return_brute_force(rew, val, nxt, term, done, gamma, lam):
    """Advantages by the definition: the λ-weighted average of the n-step returns G^(n)_t,
    n = 1..H, H the steps left in the segment (to the episode's end or the rollout's end),
    minus V(s_t). G^(n)_t = Σ_{k<n} γ^k r_{t+k} + γ^n (1 − term_{t+n−1}) V(s_{t+n})."""
    T, N = rew.shape
    adv = np.zeros((T, N))
    for e in range(N):
        for t in range(T):
            H = 1
            while t + H - 1 < T - 1 and not done[t + H - 1, e]:
                H += 1
            G = []
            for n in range(1, H + 1):
                j = t + n - 1
                g = sum(gamma**k * rew[t + k, e] for k in range(n))
                g += gamma**n * (0.0 if term[j, e] else nxt[j, e])
                G.append(g)
            lam_ret = (sum((1 - lam) * lam ** (n - 1) * G[n - 1] for n in range(1, H))
                       + lam ** (H - 1) * G[H - 1])
            adv[t, e] = lam_ret - val[t, e]
    return adv


def _hand_rollout():
    """T = 6 steps of N = 2 envs. Env 0: terminates at t = 1, truncates at t = 4 (bootstrap from
    the cut observation, V = 7), rollout ends at t = 5. Env 1: no episode end, then terminates at
    the last step. next_values[t] = values[t + 1] wherever the episode goes on."""
    rew = np.array([[1.0, 0.5], [2.0, -1.0], [0.0, 2.0], [-1.0, 0.0], [3.0, 1.0], [1.0, 4.0]])
    val = np.array([[0.3, 1.0], [0.6, -0.2], [0.9, 0.4], [-0.5, 0.8], [1.2, 0.1], [2.0, 0.7]])
    term = np.zeros((6, 2), bool)
    trunc = np.zeros((6, 2), bool)
    term[1, 0], trunc[4, 0], term[5, 1] = True, True, True
    done = term | trunc
    nxt = np.zeros_like(val)
    nxt[:-1] = val[1:]
    nxt[1, 0] = 99.0  # V of a terminal observation: must be ignored
    nxt[4, 0] = 7.0   # V of the observation the episode was cut at
    nxt[5, 0] = 1.5   # V(s_T) after the rollout, env 0
    nxt[5, 1] = 55.0  # terminal again: ignored
    return rew, val, nxt, term, done


@pytest.mark.parametrize("lam", [1.0, 0.9, 0.0])
def test_rollout_targets_equal_brute_force_with_terminations_and_truncations(lam):
    gamma = 0.9
    rew, val, nxt, term, done = _hand_rollout()
    adv, ret = A.rollout_targets(rew, val, nxt, term, done, gamma, lam)
    expected = _lambda_return_brute_force(rew, val, nxt, term, done, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ret, adv + val, rtol=0, atol=1e-12)


def test_n_step_returns_by_hand():
    """λ = 1 (SB3's A2C default): value targets are n-step returns, written out by hand."""
    g = 0.9
    rew, val, nxt, term, done = _hand_rollout()
    _, ret = A.rollout_targets(rew, val, nxt, term, done, g, 1.0)
    assert ret[0, 0] == pytest.approx(1.0 + g * 2.0)              # terminates at t = 1
    assert ret[1, 0] == pytest.approx(2.0)
    assert ret[2, 0] == pytest.approx(0.0 + g * -1.0 + g**2 * 3.0 + g**3 * 7.0)  # cut at t = 4
    assert ret[5, 0] == pytest.approx(1.0 + g * 1.5)              # rollout's end bootstraps
    assert ret[0, 1] == pytest.approx(0.5 - g + 2 * g**2 + 0 + g**4 + 4 * g**5)  # terminal
    assert ret[3, 1] == pytest.approx(0.0 + g * 1.0 + g**2 * 4.0)


def test_rollout_targets_reject_mismatched_shapes():
    rew, val, nxt, term, done = _hand_rollout()
    with pytest.raises(ValueError, match="shape"):
        A.rollout_targets(rew, val[:-1], nxt, term, done, 0.9, 1.0)
    with pytest.raises(ValueError, match="shape"):
        A.rollout_targets(rew[:, 0], val[:, 0], nxt[:, 0], term[:, 0], done[:, 0], 0.9, 1.0)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a2c_loss_equals_its_formula(env_id):
    env = gym.make(env_id)
    torch.manual_seed(0)
    model = A.ActorCritic(env, (16, 16), log_std_init=-0.3)
    with torch.no_grad():  # make the policy far from uniform so every term matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    B = 12
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(B, env.observation_space.shape[0], generator=gen)
    if env_id == "CartPole-v1":
        act = torch.randint(0, 2, (B,), generator=gen).float()
    else:
        act = 2.5 * torch.randn(B, 1, generator=gen)  # unclipped samples may leave the bounds
    adv = torch.randn(B, generator=gen)
    ret = torch.randn(B, generator=gen)
    vf, ent = 0.7, 0.05
    loss, parts = A.a2c_loss(model, obs, act, adv, ret, vf_coef=vf, ent_coef=ent)

    # the formula, written out independently in float64
    o = obs.double()
    with torch.no_grad():
        v = model.value.double()(o).squeeze(-1)
        if env_id == "CartPole-v1":
            logits = model.policy.net.double()(o)
            logz = torch.log(torch.exp(logits).sum(-1))
            logp_all = logits - logz[:, None]
            logp = logp_all[torch.arange(B), act.long()]
            H = -(logp_all.exp() * logp_all).sum(-1)
        else:
            mu = model.policy.net.double()(o)[:, 0]
            ls = model.policy.log_std.double()[0]
            sd = math.exp(float(ls))
            logp = (-((act[:, 0].double() - mu) ** 2) / (2 * sd**2) - float(ls)
                    - 0.5 * math.log(2 * math.pi))
            H = torch.full((B,), 0.5 * math.log(2 * math.pi * math.e * sd**2), dtype=o.dtype)
    pol = -(adv.double() * logp).mean()
    val_loss = ((ret.double() - v) ** 2).mean()
    expected = pol + vf * val_loss - ent * H.mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    assert parts["policy_loss"] == pytest.approx(float(pol), rel=1e-5, abs=1e-6)
    assert parts["value_loss"] == pytest.approx(float(val_loss), rel=1e-5, abs=1e-6)
    assert parts["entropy"] == pytest.approx(float(H.mean()), rel=1e-5, abs=1e-6)


def test_policy_gradient_of_the_loss_is_minus_advantage_weighted_score():
    """∂L/∂θ of the policy term = −mean Â ∇ log π (the advantages are constants)."""
    env = gym.make("CartPole-v1")
    torch.manual_seed(3)
    model = A.ActorCritic(env, (8,))
    obs = torch.randn(5, 4)
    act = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    adv = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], requires_grad=True)
    loss, _ = A.a2c_loss(model, obs, act, adv, torch.zeros(5), vf_coef=0.0, ent_coef=0.0)
    grads = torch.autograd.grad(loss, list(model.policy.parameters()))
    manual = [torch.zeros_like(p) for p in model.policy.parameters()]
    for b in range(5):
        lp = model.policy.log_prob(model.policy.params(obs[b:b + 1]), act[b:b + 1])[0]
        for m, g in zip(manual, torch.autograd.grad(lp, list(model.policy.parameters())),
                        strict=True):
            m -= float(adv[b]) * g / 5
    for g, m in zip(grads, manual, strict=True):
        torch.testing.assert_close(g, m, rtol=1e-5, atol=1e-7)
    assert adv.grad is None  # no gradient flows into the advantages


def test_cartpole_learns_in_a_small_budget():
    """20,000 steps (a few seconds): both the training episodes and the deterministic policy
    last far longer than a random policy (about 22 steps) or the untrained argmax (about 9).
    Thresholds sit well below what seeds 0-3 reach at 20-30k steps (final returns 106-500, the
    last 20 training episodes 190-440), since one float rounding changes a run's trajectory."""
    res = A.a2c("CartPole-v1", 20_000, seed=1, learning_rate=2e-3, eval_episodes=5)
    assert res.env_steps == 20_000
    early, late = res.episode_returns[:20].mean(), res.episode_returns[-20:].mean()
    assert late > 100.0 and late > 3 * early, (early, late)
    assert res.final_return > 100.0, res.final_return
    assert res.episode_end_steps[-1] <= res.env_steps
    assert set(res.history) >= {"loss", "policy_loss", "value_loss", "entropy", "grad_norm"}
    assert len(res.history["loss"]) == 20_000 // (8 * 5)


def test_box_actions_run_deterministically_and_stay_in_bounds():
    env = gym.make("Pendulum-v1")
    kw = dict(n_envs=2, n_steps=8, eval_episodes=1, eval_every=160)
    r1 = A.a2c(env, 400, seed=4, **kw)
    r2 = A.a2c("Pendulum-v1", 400, seed=4, **kw)
    np.testing.assert_array_equal(r1.history["loss"], r2.history["loss"])
    np.testing.assert_array_equal(r1.eval_returns, r2.eval_returns)
    assert r1.eval_steps.tolist() == [160, 320, 400]
    assert r1.eval_returns.shape == (3, 1)
    a = r1.policy(torch.randn(64, 3) * 10)
    assert a.shape == (64, 1) and float(a.abs().max()) <= 2.0


class _Spaces(gym.Env):
    def __init__(self, obs_space, act_space):
        self.observation_space, self.action_space = obs_space, act_space


def test_bad_spaces_are_named():
    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(TypeError, match="MultiDiscrete"):
        A.a2c(_Spaces(box, gym.spaces.MultiDiscrete([2, 3])), 10)
    with pytest.raises(TypeError, match="Tuple"):
        A.a2c(_Spaces(box, gym.spaces.Tuple((gym.spaces.Discrete(2),))), 10)
    with pytest.raises(ValueError, match="unbounded"):
        A.a2c(_Spaces(box, gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)), 10)
    with pytest.raises(TypeError, match="observation space"):
        A.a2c(_Spaces(gym.spaces.Discrete(4), gym.spaces.Discrete(2)), 10)
    with pytest.raises(TypeError, match="flat Box action"):
        A.a2c(_Spaces(box, gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)), 10)
    with pytest.raises(TypeError, match="gymnasium.Env"):
        A.a2c(object(), 10)
    with pytest.raises(TypeError, match="unknown hyper-parameter"):
        A.a2c("CartPole-v1", 10, lr=1e-3)
    with pytest.raises(ValueError, match="optimizer"):
        A.a2c("CartPole-v1", 10, optimizer="sgd")


class _CountingEnv(gym.Env):
    """obs = (k, parity): k counts steps in the episode; even episodes are cut (truncated) when
    k reaches 3, odd ones terminate when k reaches 2. Reward k + 1 whatever the action."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.k, self.episode = 0, -1

    def _obs(self):
        return np.array([self.k, self.episode % 2], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.episode = 0, self.episode + 1
        return self._obs(), {}

    def step(self, action):
        self.k += 1
        odd = self.episode % 2 == 1
        return self._obs(), float(self.k), odd and self.k == 2, (not odd) and self.k == 3, {}


def test_rollout_wiring_values_bootstraps_and_flags(monkeypatch):
    """The loop hands rollout_targets V(s_t), V(s_{t+1}) of the observation each step returned
    (the cut observation after a truncation, the next row's state otherwise), and the flags."""
    seen = []
    real = A.rollout_targets

    def spy(*args):
        seen.append([np.array(a, copy=True) for a in args[:5]])
        return real(*args)

    monkeypatch.setattr(A, "rollout_targets", spy)
    res = A.a2c(_CountingEnv(), 16, seed=0, n_envs=2, n_steps=4, learning_rate=1e-12,
                eval_episodes=1, hidden=(8,))
    assert len(seen) == 2

    def V(k, parity):
        with torch.no_grad():
            return float(res.value(torch.tensor([[k, parity]], dtype=torch.float32))[0, 0])

    # each copy's episodes: (0,0) (1,0) (2,0) -> cut at (3,0); (0,1) (1,1) -> terminal; ...
    cycle = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]
    for u, (rew, val, nxt, term, done) in enumerate(seen):
        for t in range(4):
            i = 4 * u + t
            k, parity = cycle[i % 5]
            for e in range(2):
                assert val[t, e] == pytest.approx(V(k, parity), abs=1e-6)
                assert rew[t, e] == k + 1
                assert term[t, e] == (parity == 1 and k == 1)
                assert done[t, e] == ((parity == 1 and k == 1) or (parity == 0 and k == 2))
                if parity == 0 and k == 2:
                    assert nxt[t, e] == pytest.approx(V(3, 0), abs=1e-6)  # the cut observation
                elif not term[t, e]:
                    assert nxt[t, e] == pytest.approx(V(*cycle[(i + 1) % 5]), abs=1e-6)
    assert res.episode_returns.tolist()[:4] == [6.0, 6.0, 3.0, 3.0]


def test_targets_and_update_equal_stable_baselines3():
    """On SB3's own rollouts (its A2C collecting with its policy), our targets (Eq. 9) equal its
    advantages and returns, and our loss (Eq. 10) with RMSprop and the norm clip, started from its
    weights, takes the same steps as its ``train()`` for several updates. Tolerance: float32 sums
    in a different order, about 1e-7 per update."""
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import configure_logger

    model = A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), seed=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}})
    p = model.policy
    ext = p.mlp_extractor
    pairs = {"policy.net.0": ext.policy_net[0], "policy.net.2": ext.policy_net[2],
             "policy.net.4": p.action_net, "value.0": ext.value_net[0],
             "value.2": ext.value_net[2], "value.4": p.value_net}
    ours = A.ActorCritic(gym.make("CartPole-v1"), (64, 64))
    ours.load_state_dict({f"{k}.{w}": getattr(m, w).detach().clone()
                          for k, m in pairs.items() for w in ("weight", "bias")})
    opt = torch.optim.RMSprop(ours.parameters(), lr=7e-4, alpha=0.99, eps=1e-5, weight_decay=0)
    model._setup_learn(10_000, None)
    model.set_logger(configure_logger(0))
    callback = CallbackList([])
    callback.init_callback(model)
    T, N = model.n_steps, 8
    for _ in range(6):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, T)
        rb = model.rollout_buffer
        # SB3 folds the truncation bootstrap γ V(s_cut) into the reward, so every end is a "stop"
        dones = np.zeros((T, N), bool)
        dones[:-1] = rb.episode_starts[1:] > 0
        dones[-1] = model._last_episode_starts > 0
        vals = rb.values.reshape(T, N)
        nxt = np.zeros((T, N))
        nxt[:-1] = vals[1:]
        with torch.no_grad():
            nxt[-1] = p.predict_values(torch.as_tensor(model._last_obs)).numpy().reshape(-1)
        adv, ret = A.rollout_targets(rb.rewards.reshape(T, N), vals, nxt, dones, dones, 0.99, 1.0)
        np.testing.assert_allclose(adv, rb.advantages.reshape(T, N), rtol=0, atol=1e-5)
        np.testing.assert_allclose(ret, rb.returns.reshape(T, N), rtol=0, atol=1e-5)

        loss, _ = A.a2c_loss(ours, torch.as_tensor(rb.observations.reshape(T * N, 4)),
                             torch.as_tensor(rb.actions.reshape(-1)).float(),
                             torch.as_tensor(rb.advantages.reshape(-1)),
                             torch.as_tensor(rb.returns.reshape(-1)), vf_coef=0.5, ent_coef=0.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 0.5)
        opt.step()
        model.train()
        state = ours.state_dict()
        for k, m in pairs.items():
            for w in ("weight", "bias"):
                torch.testing.assert_close(state[f"{k}.{w}"], getattr(m, w).detach(),
                                           rtol=0, atol=1e-5)
