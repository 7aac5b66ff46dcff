"""The grid world of the "mathematical foundations of RL" curriculum, with its exact model.

A ``height x width`` grid; the agent occupies one cell and picks one of five actions
(:data:`ACTIONS`: up, right, down, left, stay). The reward depends on where the move lands:

- bumping into the boundary keeps the agent in place and gives ``r_boundary``;
- landing in a forbidden cell gives ``r_forbidden`` (the move is allowed, unless
  ``forbidden_are_walls``, in which case the agent stays put and still gets ``r_forbidden``);
- landing in (or staying at) the target gives ``r_target``;
- any other move gives ``r_step``.

The task is continuing (the target is not terminal, so the optimal policy walks to the target and
stays there collecting ``r_target``), as in Zhao (2025), *Mathematical Foundations of
Reinforcement Learning*, Ch. 2. ``slip`` makes transitions stochastic: with probability ``slip``
the intended action is replaced by one drawn uniformly from all five.

States are numbered row-major, ``s = row * width + col`` with row 0 at the top.
The model is exposed as ``P[s, a, s']`` and the expected reward ``R[s, a]`` for planning, and a
gymnasium-style ``reset`` / ``step`` for model-free learning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

#: Action names in index order and their (d_row, d_col) moves.
ACTION_NAMES = ("up", "right", "down", "left", "stay")
ACTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)], dtype=np.int64)
N_ACTIONS = len(ACTIONS)

Cell = tuple[int, int]


@dataclass(frozen=True)
class Rewards:
    """Immediate rewards, keyed by where a move lands."""

    boundary: float = -1.0
    forbidden: float = -1.0
    target: float = 1.0
    step: float = 0.0


@dataclass
class GridWorld:
    """A grid world with an exact tabular model.

    Parameters
    ----------
    height, width : int
        Grid size (rows, columns), both >= 1.
    forbidden : iterable of (row, col)
        Forbidden cells (0-based).
    target : (row, col)
        The target cell; it may not be forbidden.
    rewards : Rewards or tuple (boundary, forbidden, target, step)
    gamma : float
        Discount factor in [0, 1).
    slip : float
        Probability in [0, 1] that the action is replaced by a uniformly random one.
    forbidden_are_walls : bool
        If true, moving into a forbidden cell leaves the agent in place (reward ``r_forbidden``).
    """

    height: int
    width: int
    forbidden: Iterable[Cell] = ()
    target: Cell = (0, 0)
    rewards: Rewards | tuple[float, float, float, float] = field(default_factory=Rewards)
    gamma: float = 0.9
    slip: float = 0.0
    forbidden_are_walls: bool = False

    def __post_init__(self) -> None:
        sizes_are_ints = all(isinstance(v, int | np.integer) for v in (self.height, self.width))
        if not sizes_are_ints:
            raise TypeError(f"height and width must be ints, got {self.height!r}, {self.width!r}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"grid must be at least 1x1, got {self.height}x{self.width}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 <= self.slip <= 1.0:
            raise ValueError(f"slip must be in [0, 1], got {self.slip}")
        if not isinstance(self.rewards, Rewards):
            values = tuple(self.rewards)
            if len(values) != 4:
                raise ValueError("rewards must be (boundary, forbidden, target, step), "
                                 f"got {len(values)} values")
            self.rewards = Rewards(*map(float, values))
        cells = {self._check_cell(c, "forbidden cell") for c in self.forbidden}
        self.forbidden = tuple(sorted(cells))
        self.target = self._check_cell(self.target, "target")
        if self.target in self.forbidden:
            raise ValueError(f"target {self.target} lies in a forbidden cell")
        self.P, self.R = self._build_model()
        self._rng = np.random.default_rng()
        self.state: int | None = None

    def _check_cell(self, cell, what: str) -> Cell:
        try:
            row, col = (int(v) for v in cell)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a (row, col) pair, got {cell!r}") from None
        if not (0 <= row < self.height and 0 <= col < self.width):
            raise ValueError(f"{what} {(row, col)} is outside the {self.height}x{self.width} grid")
        return row, col

    # --- model -----------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return self.height * self.width

    @property
    def n_actions(self) -> int:
        return N_ACTIONS

    def state_of(self, cell: Cell) -> int:
        """State index of a ``(row, col)`` cell."""
        row, col = self._check_cell(cell, "cell")
        return row * self.width + col

    def cell_of(self, state: int) -> Cell:
        """``(row, col)`` of a state index."""
        if not 0 <= state < self.n_states:
            raise ValueError(f"state {state} is outside 0..{self.n_states - 1}")
        return divmod(int(state), self.width)

    @property
    def target_state(self) -> int:
        return self.state_of(self.target)

    @property
    def forbidden_mask(self) -> np.ndarray:
        """Boolean mask over states, shape (S,): true for forbidden cells."""
        mask = np.zeros(self.n_states, dtype=bool)
        for cell in self.forbidden:
            mask[self.state_of(cell)] = True
        return mask

    def _deterministic_move(self) -> tuple[np.ndarray, np.ndarray]:
        """Next state and reward of each (s, a) without slip: two arrays of shape (S, A)."""
        rw = self.rewards
        forbidden = self.forbidden_mask
        rows, cols = np.divmod(np.arange(self.n_states), self.width)
        r2 = rows[:, None] + ACTIONS[None, :, 0]
        c2 = cols[:, None] + ACTIONS[None, :, 1]
        off_grid = (r2 < 0) | (r2 >= self.height) | (c2 < 0) | (c2 >= self.width)
        here = np.broadcast_to(np.arange(self.n_states)[:, None], off_grid.shape)
        landing = np.where(off_grid, here, np.clip(r2, 0, self.height - 1) * self.width
                           + np.clip(c2, 0, self.width - 1))
        reward = np.full(landing.shape, rw.step)
        into_forbidden = ~off_grid & forbidden[landing]
        reward[into_forbidden] = rw.forbidden
        reward[~off_grid & (landing == self.target_state)] = rw.target
        reward[off_grid] = rw.boundary
        next_state = np.where(into_forbidden & self.forbidden_are_walls, here, landing)
        return next_state, reward

    def _build_model(self) -> tuple[np.ndarray, np.ndarray]:
        # Deterministic tables (S, A): where each intended action lands and what it earns. step()
        # and JIT-compiled learners sample the executed action (slip) and then look these up.
        self.next_state_table, self.reward_table = self._deterministic_move()
        next_state, reward = self.next_state_table, self.reward_table
        S, A = next_state.shape
        P = np.zeros((S, A, S))
        np.add.at(P, (np.arange(S)[:, None], np.arange(A)[None, :], next_state), 1.0)
        R = reward.astype(float)
        if self.slip > 0:
            # The executed action is the intended one w.p. 1 - slip, else uniform over all A.
            mix = (1 - self.slip) * np.eye(A) + self.slip / A
            P = np.einsum("ab,sbt->sat", mix, P)
            R = R @ mix.T
        return P, R

    # --- model-free interface ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, state: int | None = None) -> tuple[int, dict]:
        """Start an episode at ``state`` (default: uniformly random). Returns ``(state, info)``."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.state = int(self._rng.integers(self.n_states)) if state is None else int(state)
        if not 0 <= self.state < self.n_states:
            raise ValueError(f"state {state} is outside 0..{self.n_states - 1}")
        return self.state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        """Take ``action``; returns ``(next_state, reward, terminated, truncated, info)``.

        The task is continuing: ``terminated`` is always false; callers cap episode lengths.
        """
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if not 0 <= action < N_ACTIONS:
            raise ValueError(f"action must be in 0..{N_ACTIONS - 1}, got {action}")
        executed = action
        if self.slip > 0 and self._rng.random() < self.slip:
            executed = int(self._rng.integers(N_ACTIONS))
        s = self.state
        self.state = int(self.next_state_table[s, executed])
        return self.state, float(self.reward_table[s, executed]), False, False, {}


def textbook_5x5(**overrides) -> GridWorld:
    """The 5x5 layout of the curriculum: six forbidden cells, target at row 3, column 2 (0-based).

    Defaults: rewards (boundary -1, forbidden -1, target 1, step 0) and gamma 0.9; any
    :class:`GridWorld` argument can be overridden.
    """
    kwargs = dict(height=5, width=5, forbidden=[(1, 1), (1, 2), (2, 2), (3, 1), (3, 3), (4, 1)],
                  target=(3, 2), rewards=Rewards(-1.0, -1.0, 1.0, 0.0), gamma=0.9)
    kwargs.update(overrides)
    return GridWorld(**kwargs)


__all__ = ["ACTIONS", "ACTION_NAMES", "GridWorld", "N_ACTIONS", "Rewards", "textbook_5x5"]
