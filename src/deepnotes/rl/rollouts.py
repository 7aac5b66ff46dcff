"""Evaluation of a deterministic policy on a gymnasium environment, shared by the deep-RL
algorithms (``ddpg``, ``trpo``)."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
from torch import nn


@torch.no_grad()
def evaluate(policy: nn.Module, env: gym.Env, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns, shape (episodes,), of the deterministic ``policy`` on ``env``;
    episode i starts from ``env.reset(seed=seed + i)``."""
    device = next(policy.parameters()).device
    out = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            a = policy(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0]
            obs, r, term, trunc, _ = env.step(a.cpu().numpy())
            out[i] += float(r)
            done = term or trunc
    return out


def evaluation_env(env: gym.Env, given: gym.Env | None) -> gym.Env:
    """``given``, else a fresh copy of ``env`` (from its spec when it has one), so evaluation
    never disturbs the training episode."""
    if given is not None:
        return given
    if env.spec is not None:
        return gym.make(env.spec)
    return copy.deepcopy(env)
