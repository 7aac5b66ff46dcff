"""The grid world's model, its step interface and its input checks."""

import numpy as np
import pytest

from deepnotes.rl.envs import ACTION_NAMES, GridWorld, textbook_5x5

UP, RIGHT, DOWN, LEFT, STAY = range(5)


def test_model_is_stochastic_and_rewards_follow_the_landing_cell():
    env = textbook_5x5(rewards=(-1, -10, 1, 0))
    assert env.P.shape == (25, 5, 25) and env.R.shape == (25, 5)
    np.testing.assert_allclose(env.P.sum(axis=2), 1.0)
    s = env.state_of((0, 0))
    assert env.R[s, UP] == -1 and env.P[s, UP, s] == 1  # boundary: stay, penalised
    assert env.R[s, RIGHT] == 0 and env.P[s, RIGHT, env.state_of((0, 1))] == 1
    s = env.state_of((0, 1))
    assert env.R[s, DOWN] == -10 and env.P[s, DOWN, env.state_of((1, 1))] == 1  # may enter
    t = env.target_state
    assert env.R[t, STAY] == 1 and env.R[env.state_of((2, 2)), DOWN] == 1
    assert env.R[env.state_of((1, 1)), STAY] == -10  # staying in a forbidden cell


def test_forbidden_cells_as_walls():
    env = textbook_5x5(forbidden_are_walls=True)
    s = env.state_of((0, 1))
    assert env.P[s, DOWN, s] == 1 and env.R[s, DOWN] == -1


def test_slip_mixes_actions_and_step_samples_the_model():
    env = GridWorld(2, 2, target=(1, 1), slip=0.5, gamma=0.5)
    deterministic = GridWorld(2, 2, target=(1, 1), gamma=0.5)
    mix = 0.5 * np.eye(5) + 0.5 / 5
    np.testing.assert_allclose(env.P, np.einsum("ab,sbt->sat", mix, deterministic.P))
    np.testing.assert_allclose(env.R, deterministic.R @ mix.T)
    counts = np.zeros(4)
    rewards = []
    env.reset(seed=0)
    for _ in range(20_000):
        env.state = 0
        s2, r, terminated, truncated, _ = env.step(RIGHT)
        counts[s2] += 1
        rewards.append(r)
        assert not terminated and not truncated
    # 20k draws: the standard error of a frequency is <= 0.0035; 0.02 is > 5 of them
    np.testing.assert_allclose(counts / counts.sum(), env.P[0, RIGHT], atol=0.02)
    assert abs(np.mean(rewards) - env.R[0, RIGHT]) < 0.02


@pytest.mark.parametrize("kwargs, message", [
    (dict(target=(1, 1), forbidden=[(1, 1)]), "target"),
    (dict(target=(5, 0)), "outside"),
    (dict(target=(0, 0), forbidden=[(0, 9)]), "outside"),
    (dict(target=(0, 0), gamma=1.0), "gamma"),
    (dict(target=(0, 0), gamma=-0.1), "gamma"),
    (dict(target=(0, 0), slip=1.5), "slip"),
    (dict(target=(0, 0), rewards=(1, 2)), "rewards"),
])
def test_invalid_layouts_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridWorld(3, 3, **kwargs)


def test_step_needs_reset_and_valid_action():
    env = GridWorld(2, 2, target=(0, 0))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=1)
    with pytest.raises(ValueError, match="action"):
        env.step(len(ACTION_NAMES))
