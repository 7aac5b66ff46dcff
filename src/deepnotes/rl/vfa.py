"""Value-function approximation on the grid world: features, TD-linear, linear Sarsa / Q-learning,
and DQN.

Equation numbers refer to the ``value-function-methods`` post (Zhao (2025), *Mathematical
Foundations of Reinforcement Learning*, Ch. 8):

- features φ(s) of the normalised cell coordinates (Eq. 1): :func:`polynomial_features`,
  :func:`fourier_features`, :func:`tile_features`, and :func:`one_hot_features` (tabular);
- TD-linear, w ← w + α [r + γ φ(s')ᵀw − φ(s)ᵀw] φ(s) (Eq. 3) in :func:`td_linear`, and the point it
  converges to, the solution of Φᵀ D (Φ − γ P_π Φ) w = Φᵀ D r_π (Eq. 4), computed exactly by
  :func:`td_fixed_point` with the state weighting D of :func:`stationary_distribution` or
  :func:`visitation_distribution`;
- Sarsa and Q-learning with q(s, a) = φ(s)ᵀ W[:, a] (Eq. 5–6): :func:`linear_sarsa`,
  :func:`linear_q_learning`;
- DQN (Eq. 7): :func:`dqn`, a small torch MLP fitted to q* from a fixed replay buffer of
  uniformly random transitions with a periodically copied target network.

The linear learners run in numba kernels with the same draw order as :mod:`deepnotes.rl._kernels`,
so with one-hot features they reproduce the tabular :func:`deepnotes.rl.td.td0`,
:func:`~deepnotes.rl.td.sarsa` and :func:`~deepnotes.rl.td.q_learning` bit for bit (a test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from deepnotes.rl import _kernels as K
from deepnotes.rl._kernels import ValueEstimate
from deepnotes.rl.planning import Solution, _check_model, greedy_policy, policy_matrix


# --- features ------------------------------------------------------------------------------------
def cell_coordinates(env) -> np.ndarray:
    """Normalised (x, y) = (col / (W − 1), row / (H − 1)) in [0, 1]² per state, shape (S, 2)."""
    rows, cols = np.divmod(np.arange(env.height * env.width), env.width)
    x = cols / max(env.width - 1, 1)
    y = rows / max(env.height - 1, 1)
    return np.stack([x, y], axis=1)


def _check_order(order, name: str = "order", minimum: int = 0) -> int:
    return K.check_count(order, name, minimum)


def polynomial_features(env, order: int) -> np.ndarray:
    """All monomials x^i y^j with i + j <= ``order`` (Eq. 1), shape (S, (order+1)(order+2)/2).

    Order 1 is the textbook's plane [1, x, y]; the constant is always included. The coordinates
    are centred to [−1, 1]: monomials of [0, 1] coordinates are nearly collinear (x³ ≈ x⁴ near 0),
    which makes the slow directions of TD-linear orders of magnitude slower.
    """
    order = _check_order(order)
    xy = 2.0 * cell_coordinates(env) - 1.0
    cols = [xy[:, 0] ** i * xy[:, 1] ** (k - i) for k in range(order + 1) for i in range(k + 1)]
    return np.stack(cols, axis=1)


def fourier_features(env, order: int) -> np.ndarray:
    """cos(π (c₁ x + c₂ y)) for c₁, c₂ in 0..``order`` (Eq. 1), shape (S, (order+1)²)."""
    order = _check_order(order)
    xy = cell_coordinates(env)
    c = np.array([(i, j) for i in range(order + 1) for j in range(order + 1)], float)
    return np.cos(np.pi * xy @ c.T)


def tile_features(env, n_tilings: int, tiles: int) -> np.ndarray:
    """Binary tile coding of (x, y) (Eq. 1), shape (S, n_tilings * (tiles + 1)²).

    Each tiling covers [0, 1]² with a grid of ``tiles`` x ``tiles`` squares of side 1 / tiles,
    shifted by k / (n_tilings · tiles) in both coordinates for tiling k (so it needs one extra
    row and column); a state activates one tile per tiling, so ‖φ(s)‖² = n_tilings.
    """
    n_tilings = _check_order(n_tilings, "n_tilings", 1)
    tiles = _check_order(tiles, "tiles", 1)
    xy = cell_coordinates(env)
    S, side = xy.shape[0], tiles + 1
    phi = np.zeros((S, n_tilings * side * side))
    for k in range(n_tilings):
        # The small epsilon keeps cells that sit exactly on a tile edge on one side consistently.
        shifted = xy * tiles + k / n_tilings + 1e-9
        ij = np.minimum(np.floor(shifted).astype(int), tiles)
        phi[np.arange(S), k * side * side + ij[:, 1] * side + ij[:, 0]] = 1.0
    return phi


def one_hot_features(env) -> np.ndarray:
    """The tabular case φ(s) = e_s, shape (S, S): TD-linear is then TD(0) (Eq. 3)."""
    return np.eye(env.height * env.width)


def make_features(env, kind: str, order: int, n_tilings: int = 4) -> np.ndarray:
    """``kind`` in {"polynomial", "fourier", "tile", "one_hot"}; ``order`` is the polynomial
    degree, the Fourier order, or the number of tiles per dimension."""
    if kind == "polynomial":
        return polynomial_features(env, order)
    if kind == "fourier":
        return fourier_features(env, order)
    if kind == "tile":
        return tile_features(env, n_tilings, order)
    if kind == "one_hot":
        return one_hot_features(env)
    raise ValueError(f"unknown feature kind {kind!r}: use polynomial, fourier, tile or one_hot")


def _check_phi(phi, n_states: int) -> np.ndarray:
    phi = np.ascontiguousarray(phi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != n_states or phi.shape[1] < 1:
        raise ValueError(f"features must have shape ({n_states}, d), got {phi.shape}")
    if not np.isfinite(phi).all():
        raise ValueError("features must be finite")
    return phi


# --- exact references ----------------------------------------------------------------------------
def _markov_chain(model, policy) -> tuple[np.ndarray, np.ndarray, float]:
    P, R, gamma = _check_model(model)
    pi = policy_matrix(policy, *R.shape)
    return np.einsum("sa,sat->st", pi, P), (pi * R).sum(axis=1), gamma


def stationary_distribution(model, policy) -> np.ndarray:
    """d_π with d_πᵀ P_π = d_πᵀ, Σ d_π = 1, shape (S,); least squares if it is not unique."""
    P_pi, _, _ = _markov_chain(model, policy)
    S = P_pi.shape[0]
    A = np.vstack([P_pi.T - np.eye(S), np.ones((1, S))])
    b = np.zeros(S + 1)
    b[-1] = 1.0
    d = np.linalg.lstsq(A, b, rcond=None)[0]
    return np.clip(d, 0.0, None) / np.clip(d, 0.0, None).sum()


def visitation_distribution(model, policy, episode_length: int, start=None) -> np.ndarray:
    """Average state distribution over the steps t = 0..L−1 of an episode started from
    ``start`` (default uniform): (1/L) Σ_t μ₀ᵀ P_π^t, shape (S,). This is the D under which
    :func:`td_linear` updates, since every step of every episode is one update."""
    P_pi, _, _ = _markov_chain(model, policy)
    L = K.check_count(episode_length, "episode_length")
    S = P_pi.shape[0]
    mu = np.full(S, 1.0 / S) if start is None else np.asarray(start, float)
    if mu.shape != (S,) or (mu < 0).any() or not np.isclose(mu.sum(), 1.0):
        raise ValueError(f"start must be a distribution of shape ({S},)")
    acc = np.zeros(S)
    for _ in range(L):
        acc += mu
        mu = mu @ P_pi
    return acc / L


def td_fixed_point(model, policy, phi, weights) -> np.ndarray:
    """The TD-linear fixed point w* solving Φᵀ D (Φ − γ P_π Φ) w = Φᵀ D r_π (Eq. 4), shape (d,).

    ``weights`` (S,) is the diagonal of D (the distribution the updates sample states from).
    """
    P_pi, r_pi, gamma = _markov_chain(model, policy)
    phi = _check_phi(phi, P_pi.shape[0])
    D = np.asarray(weights, float)
    if D.shape != (P_pi.shape[0],) or (D < 0).any():
        raise ValueError(f"weights must be non-negative of shape ({P_pi.shape[0]},)")
    A = phi.T @ (D[:, None] * (phi - gamma * P_pi @ phi))
    b = phi.T @ (D * r_pi)
    return np.linalg.lstsq(A, b, rcond=None)[0]


# --- numba kernels -------------------------------------------------------------------------------
@njit(cache=True)
def _dot(phi, s, w):
    acc = 0.0
    for i in range(phi.shape[1]):
        acc += phi[s, i] * w[i]
    return acc


@njit(cache=True)
def _td_linear_kernel(nxt, rew, slip, gamma, cdf, phi, w, alphas, episode_length, seed, v_true,
                      v_error):
    np.random.seed(seed)
    S = phi.shape[0]
    for ep in range(alphas.shape[0]):
        alpha = alphas[ep]
        s = K._draw_int(S)
        for _ in range(episode_length):
            a = K._from_cdf(cdf, s)
            s2, r = K._step(nxt, rew, slip, s, a)
            delta = r + gamma * _dot(phi, s2, w) - _dot(phi, s, w)
            for i in range(w.shape[0]):
                w[i] += alpha * delta * phi[s, i]
            s = s2
        if v_true.shape[0] == S:
            err = 0.0
            for j in range(S):
                err = max(err, abs(_dot(phi, j, w) - v_true[j]))
            v_error[ep] = err


@njit(cache=True)
def _q_table(phi, W, q):
    for s in range(phi.shape[0]):
        for a in range(W.shape[1]):
            acc = 0.0
            for i in range(phi.shape[1]):
                acc += phi[s, i] * W[i, a]
            q[s, a] = acc


@njit(cache=True)
def _q_row(phi, W, s, row):
    for a in range(W.shape[1]):
        acc = 0.0
        for i in range(phi.shape[1]):
            acc += phi[s, i] * W[i, a]
        row[a] = acc


@njit(cache=True)
def _choose(phi, W, s, eps, row, off_policy, cdf):
    if off_policy:
        return K._from_cdf(cdf, s)
    _q_row(phi, W, s, row)
    return K._eps_greedy(row.reshape(1, -1), 0, eps)


@njit(cache=True)
def _linear_control_kernel(nxt, rew, slip, gamma, phi, W, alphas, epsilons, episode_length,
                           method, behaviour_cdf, exploring_starts, seed, target, v_star,
                           opt_mask, returns, steps_to_target, v_error, opt_frac):
    """Linear Sarsa / Q-learning (Eq. 5–6); the draw order of ``td_control_kernel`` with n = 1."""
    np.random.seed(seed)
    S, A = nxt.shape
    off_policy = behaviour_cdf.shape[0] == S
    row = np.zeros(A)
    q = np.zeros((S, A))
    a2 = 0
    for ep in range(alphas.shape[0]):
        alpha, eps = alphas[ep], epsilons[ep]
        s = K._draw_int(S)
        if exploring_starts:
            a = K._draw_int(A)
        else:
            a = _choose(phi, W, s, eps, row, off_policy, behaviour_cdf)
        total = 0.0
        hit = episode_length
        for t in range(episode_length):
            s2, r = K._step(nxt, rew, slip, s, a)
            total += r
            if s2 == target and hit == episode_length:
                hit = t + 1
            if method == K.SARSA:
                a2 = _choose(phi, W, s2, eps, row, off_policy, behaviour_cdf)
                boot = 0.0
                for i in range(phi.shape[1]):
                    boot += phi[s2, i] * W[i, a2]
            else:
                _q_row(phi, W, s2, row)
                boot = row[K._greedy(row.reshape(1, -1), 0)]
            q_sa = 0.0
            for i in range(phi.shape[1]):
                q_sa += phi[s, i] * W[i, a]
            delta = r + gamma * boot - q_sa
            for i in range(phi.shape[1]):
                W[i, a] += alpha * delta * phi[s, i]
            if method != K.SARSA:
                a2 = _choose(phi, W, s2, eps, row, off_policy, behaviour_cdf)
            s, a = s2, a2
        returns[ep] = total
        steps_to_target[ep] = hit
        if v_star.shape[0] == S or opt_mask.shape[0] == S:
            _q_table(phi, W, q)
            K._track(q, v_star, opt_mask, ep, v_error, opt_frac)


# --- learners ------------------------------------------------------------------------------------
def td_linear(env, policy, phi, episodes: int, alpha: float = 0.01, episode_length: int = 100,
              seed: int = 0, *, alpha_final: float | None = None, decay_fraction: float = 1.0,
              w0=None, v_true=None) -> tuple[np.ndarray, ValueEstimate]:
    """TD-linear evaluation of a fixed policy (Eq. 3): v̂(s) = φ(s)ᵀ w.

    Parameters
    ----------
    env : GridWorld
    policy : int array (S,) or probabilities (S, A)
    phi : ndarray (S, d)              features per state (e.g. :func:`fourier_features`)
    episodes : int >= 1               episodes, each from a uniformly random state
    alpha : float in (0, 1]           step size of the first episode; stable steps scale like
                                      1 / max_s ‖φ(s)‖²
    episode_length : int >= 1         steps per episode (default 100)
    seed : int
    alpha_final : float or None       step size at the end of the decay (None: constant α)
    decay_fraction : float in (0, 1]  fraction of the episodes over which α decays linearly
    w0 : ndarray (d,), optional       initial weights (default zeros)
    v_true : ndarray (S,), optional   exact v_π for ``history["v_error"]`` = ‖Φw − v_π‖_∞

    Returns
    -------
    (w, ValueEstimate)
        the weights (d,) and the estimate ``v = Φ w`` (S,) with its history.
    """
    nxt, rew, slip, gamma, _ = K.env_arrays(env)
    S, A = nxt.shape
    phi = _check_phi(phi, S)
    episodes = K.check_count(episodes, "episodes")
    episode_length = K.check_count(episode_length, "episode_length")
    alphas = K.schedule(alpha, alpha_final, episodes, "alpha", open_low=True,
                        decay_fraction=decay_fraction)
    cdf = K.policy_cdf(policy, S, A)
    w = np.zeros(phi.shape[1]) if w0 is None else np.array(w0, dtype=float)
    if w.shape != (phi.shape[1],):
        raise ValueError(f"w0 must have shape ({phi.shape[1]},), got {w.shape}")
    v_ref, _ = K.reference_arrays(v_true, None, S, A, 0.0)
    v_error = np.zeros(episodes)
    _td_linear_kernel(nxt, rew, slip, gamma, cdf, phi, w, alphas, episode_length,
                      K.check_seed(seed), v_ref, v_error)
    history = {"env_steps": (np.arange(1, episodes + 1) * episode_length).tolist()}
    if len(v_ref):
        history["v_error"] = v_error.tolist()
    return w, ValueEstimate(phi @ w, episodes, history)


@dataclass
class LinearSolution(Solution):
    """A :class:`Solution` whose q = Φ W; ``weights`` is W, shape (d, A)."""

    weights: np.ndarray | None = None


def _linear_control(env, phi, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                    epsilon_final, decay_fraction, method, behaviour, exploring_starts, v_star,
                    q_star, tie_tol) -> LinearSolution:
    nxt, rew, slip, gamma, target = K.env_arrays(env)
    S, A = nxt.shape
    phi = _check_phi(phi, S)
    episodes = K.check_count(episodes, "episodes")
    episode_length = K.check_count(episode_length, "episode_length")
    alphas = K.schedule(alpha, alpha_final, episodes, "alpha", open_low=True,
                        decay_fraction=decay_fraction)
    epsilons = K.schedule(epsilon, epsilon_final, episodes, "epsilon", open_low=False,
                          decay_fraction=decay_fraction)
    cdf = np.zeros((0, A)) if behaviour is None else K.policy_cdf(behaviour, S, A)
    W = np.zeros((phi.shape[1], A))
    v_ref, mask = K.reference_arrays(v_star, q_star, S, A, tie_tol)
    returns, v_error, opt_frac = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes)
    steps_to_target = np.zeros(episodes, np.int64)
    _linear_control_kernel(nxt, rew, slip, gamma, phi, W, alphas, epsilons, episode_length,
                           method, cdf, bool(exploring_starts), K.check_seed(seed), target, v_ref,
                           mask, returns, steps_to_target, v_error, opt_frac)
    history = K.control_history(returns, steps_to_target, v_error, opt_frac, len(v_ref) > 0,
                                mask.size > 0, episode_length)
    q = phi @ W
    return LinearSolution(q.max(axis=1), q, greedy_policy(q), episodes, history, weights=W)


_LINEAR_DOC = """
    Parameters
    ----------
    env : GridWorld
    phi : ndarray (S, d)            state features; q(s, a) = φ(s)ᵀ W[:, a] (one weight vector per
                                    action, i.e. features φ(s) ⊗ e_a)
    episodes : int >= 1             episodes, each from a uniformly random state
    alpha : float in (0, 1]         step size of the first episode (scale like 1 / ‖φ‖²)
    epsilon : float in [0, 1]       ε of the ε-greedy behaviour on the current q
    seed : int
    episode_length : int >= 1       steps per episode (default 100)
    alpha_final, epsilon_final      values reached by linear decay (None: constant)
    decay_fraction : float in (0, 1]  fraction of the episodes over which α and ε decay
    exploring_starts : bool         uniformly random first action of each episode
    v_star, q_star : optional       exact v*, q* for ``history["v_error"]``,
                                    ``history["optimal_fraction"]``
    tie_tol : float                 q*-gap under which an action counts as optimal

    Returns
    -------
    LinearSolution
        q = Φ W (S, A), its greedy policy, ``weights`` W (d, A), and the per-episode history of
        :func:`deepnotes.rl.td.sarsa`.
"""


def linear_sarsa(env, phi, episodes: int, alpha: float = 0.05, epsilon: float = 0.1,
                 seed: int = 0, *, episode_length: int = 100, alpha_final: float | None = None,
                 epsilon_final: float | None = None, decay_fraction: float = 1.0,
                 exploring_starts: bool = False, v_star=None, q_star=None,
                 tie_tol: float = 1e-6) -> LinearSolution:
    return _linear_control(env, phi, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                           epsilon_final, decay_fraction, K.SARSA, None, exploring_starts, v_star,
                           q_star, tie_tol)


def linear_q_learning(env, phi, episodes: int, alpha: float = 0.05, epsilon: float = 0.1,
                      seed: int = 0, *, behaviour_policy=None, episode_length: int = 100,
                      alpha_final: float | None = None, epsilon_final: float | None = None,
                      decay_fraction: float = 1.0, exploring_starts: bool = False, v_star=None,
                      q_star=None, tie_tol: float = 1e-6) -> LinearSolution:
    return _linear_control(env, phi, episodes, alpha, epsilon, seed, episode_length, alpha_final,
                           epsilon_final, decay_fraction, K.Q_LEARNING, behaviour_policy,
                           exploring_starts, v_star, q_star, tie_tol)


linear_sarsa.__doc__ = ("Sarsa with linear function approximation (Eq. 5): W[:, a] += α δ φ(s) "
                        "with δ = r + γ q(s', a') − q(s, a), a' from the ε-greedy behaviour.\n"
                        + _LINEAR_DOC)
linear_q_learning.__doc__ = (
    "Q-learning with linear function approximation (Eq. 6): δ = r + γ max_b q(s', b) − q(s, a). "
    "With ``behaviour_policy`` (int (S,) or probabilities (S, A)) the actions come from that "
    "fixed policy instead of ε-greedy (off-policy; ε is then unused). Linear Q-learning can "
    "diverge off-policy (the deadly triad); with one-hot features it is tabular Q-learning.\n"
    "    behaviour_policy : optional fixed behaviour\n" + _LINEAR_DOC)


# --- DQN -----------------------------------------------------------------------------------------
@dataclass
class DQNSolution(Solution):
    """A :class:`Solution` from :func:`dqn`; ``net`` is the trained torch module (coords → q)."""

    net: object = None


def uniform_transitions(env, n_transitions: int, episode_length: int = 100,
                        seed: int = 0) -> tuple[np.ndarray, ...]:
    """Off-policy data: ``n_transitions`` steps of the uniformly random behaviour, in episodes of
    ``episode_length`` from uniformly random states. Returns int s (N,), a (N,), float r (N,),
    int s' (N,)."""
    nxt, rew, slip, _, _ = K.env_arrays(env)
    S, A = nxt.shape
    n = K.check_count(n_transitions, "n_transitions")
    L = K.check_count(episode_length, "episode_length")
    rng = np.random.default_rng(K.check_seed(seed))
    s_buf, a_buf = np.zeros(n, np.int64), rng.integers(A, size=n)
    r_buf, s2_buf = np.zeros(n), np.zeros(n, np.int64)
    slips = rng.random(n) < slip
    executed = np.where(slips, rng.integers(A, size=n), a_buf)
    s = 0
    for t in range(n):
        if t % L == 0:
            s = int(rng.integers(S))
        s_buf[t] = s
        r_buf[t], s = rew[s, executed[t]], int(nxt[s, executed[t]])
        s2_buf[t] = s
    return s_buf, a_buf, r_buf, s2_buf


def dqn(env, iterations: int = 4000, *, n_transitions: int = 2000, episode_length: int = 100,
        batch_size: int = 128, hidden: tuple[int, ...] = (64, 64), lr: float = 3e-3,
        target_update: int = 50, seed: int = 0, eval_every: int = 100, v_star=None, q_star=None,
        tie_tol: float = 1e-6, device=None) -> DQNSolution:
    """Deep Q-learning (Eq. 7) from a fixed replay buffer of uniformly random transitions.

    The network maps the normalised cell coordinates (x, y) to the five action values. Each
    iteration samples ``batch_size`` transitions uniformly from the buffer and takes one Adam step
    on the mean of (r + γ max_b q̂_target(s', b) − q̂(s, a))², where q̂_target is a copy of the
    network refreshed every ``target_update`` iterations.

    Parameters
    ----------
    env : GridWorld
    iterations : int >= 1           gradient steps (default 4000)
    n_transitions : int >= 1        size of the replay buffer (uniform behaviour, default 2000)
    episode_length : int >= 1       steps per behaviour episode (default 100)
    batch_size : int >= 1           transitions per gradient step (default 128)
    hidden : tuple of int           widths of the ReLU hidden layers (default (64, 64))
    lr : float > 0                  Adam learning rate (default 3e-3)
    target_update : int >= 1        iterations between target-network copies (default 50)
    seed : int                      seeds the data, the initial weights and the minibatches
    eval_every : int >= 1           iterations between entries of the history
    v_star, q_star : optional       exact references for ``history["v_error"]``,
                                    ``history["optimal_fraction"]``
    device : torch device, optional where the networks, the buffer and the updates live
                                    (default CPU); the weights are initialised and the
                                    minibatch indices drawn on the CPU, so every device starts
                                    from the same weights and visits the same minibatches

    Returns
    -------
    DQNSolution
        q (S, A) of the trained network, greedy policy, ``iterations``, ``net``; history per
        evaluation: ``"iteration"``, ``"loss"`` (mean minibatch loss since the last entry), and
        ``"v_error"`` / ``"optimal_fraction"`` when references are given.
    """
    import torch

    nxt, _, _, gamma, _ = K.env_arrays(env)
    S, A = nxt.shape
    iterations = K.check_count(iterations, "iterations")
    batch_size = K.check_count(batch_size, "batch_size")
    target_update = K.check_count(target_update, "target_update")
    eval_every = K.check_count(eval_every, "eval_every")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    hidden = tuple(K.check_count(h, "hidden width") for h in hidden)
    seed = K.check_seed(seed)
    device = torch.device("cpu") if device is None else torch.device(device)
    v_ref, mask = K.reference_arrays(v_star, q_star, S, A, tie_tol)
    s_b, a_b, r_b, s2_b = (torch.as_tensor(x).to(device) for x in uniform_transitions(
        env, n_transitions, episode_length, seed))
    r_b = r_b.float()
    x_all = torch.as_tensor(cell_coordinates(env), dtype=torch.float32).to(device)  # (S, 2)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers, width = [], 2
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width, A))
        target = torch.nn.Sequential(*[type(m)(m.in_features, m.out_features)
                                       if isinstance(m, torch.nn.Linear) else torch.nn.ReLU()
                                       for m in net])
        target.load_state_dict(net.state_dict())
        net, target = net.to(device), target.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        history: dict[str, list] = {"iteration": [], "loss": []}
        if len(v_ref):
            history["v_error"] = []
        if mask.size:
            history["optimal_fraction"] = []
        running, count = 0.0, 0
        for it in range(1, iterations + 1):
            idx = torch.randint(len(s_b), (batch_size,), generator=gen).to(device)
            s, a, r, s2 = s_b[idx], a_b[idx], r_b[idx], s2_b[idx]
            with torch.no_grad():
                y = r + gamma * target(x_all[s2]).max(dim=1).values  # (B,)
            q_sa = net(x_all[s]).gather(1, a[:, None]).squeeze(1)  # (B,)
            loss = torch.mean((y - q_sa) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            count += 1
            if it % target_update == 0:
                target.load_state_dict(net.state_dict())
            if it % eval_every == 0 or it == iterations:
                with torch.no_grad():
                    q = net(x_all).double().cpu().numpy()
                history["iteration"].append(it)
                history["loss"].append(running / count)
                running, count = 0.0, 0
                if len(v_ref):
                    history["v_error"].append(float(np.abs(q.max(axis=1) - v_ref).max()))
                if mask.size:
                    history["optimal_fraction"].append(
                        float(mask[np.arange(S), greedy_policy(q, 0.0)].mean()))
    with torch.no_grad():
        q = net(x_all).double().cpu().numpy()
    return DQNSolution(q.max(axis=1), q, greedy_policy(q, 0.0), iterations, history, net=net)


__all__ = [
    "DQNSolution", "LinearSolution", "cell_coordinates", "dqn", "fourier_features",
    "linear_q_learning", "linear_sarsa", "make_features", "one_hot_features",
    "polynomial_features", "stationary_distribution", "td_fixed_point", "td_linear",
    "tile_features", "uniform_transitions", "visitation_distribution",
]
