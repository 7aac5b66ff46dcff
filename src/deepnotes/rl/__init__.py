"""Reinforcement learning, from stochastic approximation to actor-critic.

Algorithm modules here are pure: no file I/O, printing, plotting or CLI."""
