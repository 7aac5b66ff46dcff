"""Shared figures of the grid-world topics: value heatmaps with policy arrows, learning curves."""

from __future__ import annotations

import numpy as np

from deepnotes.core.plotting import PALETTE, new_figure

#: Axis label (mathtext) for the control error every grid-world topic reports.
Q_ERROR = r"$\|\mathrm{max}_a\, q - v^*\|_\infty$"

#: Learner names (dict keys and metric groups) as a reader should see them in a legend.
LABELS = {
    "sarsa": "Sarsa",
    "expected_sarsa": "Expected Sarsa",
    "n_step_sarsa": "$n$-step Sarsa",
    "q_learning": "Q-learning",
    "q_learning_offpolicy": "Q-learning, off-policy (uniform behaviour)",
}


def learner_label(name: str) -> str:
    """The legend text for learner ``name`` (``name`` itself when it has no entry)."""
    return LABELS.get(name, name)

# (dx, dy) in plot coordinates (row 0 at the top, so "up" is -y after the axis inversion).
_ARROWS = {0: (0.0, -0.32), 1: (0.32, 0.0), 2: (0.0, 0.32), 3: (-0.32, 0.0)}


def draw_values(ax, env, v, policy=None, *, title: str = "", vmin=None, vmax=None,
                annotate: bool = True):
    """Heatmap of ``v`` (shape (S,)) on the grid, forbidden cells hatched, the target outlined,
    and ``policy`` (int (S,)) as arrows (a dot for "stay"). Returns the image."""
    H, W = env.height, env.width
    grid = np.asarray(v, float).reshape(H, W)
    im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for r, c in env.forbidden:
        ax.add_patch(_rect(r, c, hatch="///", edgecolor=PALETTE[3], lw=0))
    tr, tc = env.target
    ax.add_patch(_rect(tr, tc, edgecolor=PALETTE[1], lw=2.5))
    small = H * W > 36
    for s in range(H * W):
        r, c = divmod(s, W)
        if annotate and not small:
            ax.text(c, r + 0.33, f"{grid[r, c]:.1f}", ha="center", va="center", fontsize=8,
                    color="white")
        if policy is None:
            continue
        a = int(policy[s])
        if a in _ARROWS:
            dx, dy = _ARROWS[a]
            ax.annotate("", xy=(c + dx, r + dy - 0.08), xytext=(c, r - 0.08),
                        arrowprops=dict(arrowstyle="->", color="white", lw=1.3))
        else:
            ax.plot(c, r - 0.08, "o", ms=4, mfc="none", mec="white")
    if title:
        ax.set_title(title)
    return im


def _rect(r, c, **kw):
    from matplotlib.patches import Rectangle

    return Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, **kw)


def values_figure(env, panels):
    """One heatmap per ``(title, v, policy)`` panel on a shared colour scale; returns the figure.

    At most 7 in wide (the post column): up to three panels in a row, four as a 2×2 grid, more in
    rows of three."""
    vals = np.concatenate([np.asarray(v, float) for _, v, _ in panels])
    vmin, vmax = float(vals.min()), float(vals.max())
    n = len(panels)
    ncols = n if n <= 3 else 2 if n == 4 else 3
    nrows = -(-n // ncols)
    width = min(7.0, 0.9 + 2.5 * ncols)
    panel = (width - 0.9) / ncols - 0.1  # the side of one square heatmap, inches
    title_lines = max(str(title).count("\n") + 1 for title, _, _ in panels)
    height = nrows * (panel + 0.25 + 0.2 * title_lines)
    fig, axes = new_figure(nrows, ncols, size=(width, height), squeeze=False,
                           layout="constrained")
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (title, v, policy) in zip(axes[:n], panels, strict=True):
        im = draw_values(ax, env, v, policy, title=title, vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=list(axes[:n]), shrink=0.8, label="state value")
    return fig


def curves(ax, x, ys: dict, *, xlabel: str, ylabel: str, log: bool = False, smooth: int = 1,
           legend: bool = True):
    """Plot ``{label: y}`` against ``x`` with an optional moving average of width ``smooth``
    (a key in :data:`LABELS` is shown by its label; ``legend=False`` leaves the legend out)."""
    for i, (label, y) in enumerate(ys.items()):
        y = np.asarray(y, float)
        xs = np.asarray(x[label] if isinstance(x, dict) else x, float)
        if smooth > 1 and len(y) >= smooth:
            kernel = np.ones(smooth) / smooth
            y = np.convolve(y, kernel, mode="valid")
            xs = xs[smooth - 1:]
        ax.plot(xs, y, color=PALETTE[i % len(PALETTE)], label=LABELS.get(label, label), lw=1.4)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(fontsize=9)


def suboptimal_counts_figure(counts: dict, title: str):
    """Bar chart of ``{variant: [number of states with a suboptimal greedy action, per seed]}``:
    one group of bars per variant, one bar per seed (a zero-height bar is a perfect policy)."""
    fig, ax = new_figure()
    width = 0.8 / max(len(v) for v in counts.values())
    for i, per_seed in enumerate(counts.values()):
        for j, n in enumerate(per_seed):
            x = i + (j - (len(per_seed) - 1) / 2) * width
            ax.bar(x, n, width * 0.9, color=PALETTE[i % len(PALETTE)])
            if n == 0:  # a zero-height bar is invisible: mark the perfect seed
                ax.plot(x, 0, marker="o", ms=4, color=PALETTE[i % len(PALETTE)], clip_on=False)
    ax.set_xticks(range(len(counts)), list(counts), fontsize=9)
    ax.set_ylabel("states with a suboptimal greedy action")
    ax.set_title(title + " (one bar per seed)")
    return fig
