"""House plotting style: Agg backend, one palette, consistent figure sizes, PNG output."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # experiments run headless (CI, servers); never open a window

import matplotlib.pyplot as plt  # noqa: E402

#: Colour cycle used by every figure (colour-blind-safe, Okabe–Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

#: Figure sizes in inches, by name.
SIZES = {"single": (6.0, 4.0), "wide": (10.0, 4.0), "square": (5.0, 5.0), "grid": (10.0, 8.0)}
# Column sizes: the site's post column is ~700 px (~5.8 in at 120 dpi), so a 7-in figure shrinks
# only ~1.2x there and 10-pt text stays near 9 pt (a 10-in "wide" one shrinks 1.7x). Prefer these.
SIZES.update({"column": (7.0, 3.2), "column_tall": (7.0, 4.2), "column_grid": (7.0, 5.6)})

STYLE = {
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "axes.titlesize": 11,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
}
plt.rcParams.update(STYLE)


def new_figure(nrows: int = 1, ncols: int = 1, size: str | tuple[float, float] = "single", **kw):
    """A figure in the house style. Returns ``(fig, axes)`` like ``plt.subplots``."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown figure size {size!r}; expected one of {sorted(SIZES)}")
        size = SIZES[size]
    return plt.subplots(nrows, ncols, figsize=size, **kw)


def save_figure(fig, path) -> None:
    """Write ``fig`` as PNG to ``path`` and close it (figures are not kept alive in long runs)."""
    fig.savefig(path, format="png")
    plt.close(fig)
