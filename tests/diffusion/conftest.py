"""Shared references for the diffusion tests: a 3-component 2-D Gaussian mixture and a checker
that compares samples with it component by component."""

from __future__ import annotations

import math

import pytest
import torch

from deepnotes.diffusion.gmm import GaussianMixture

#: Z-score bound of every per-component check. Each statistic below is compared with its exact
#: value in units of its sampling standard error; |z| <= 5 has a two-sided false-alarm
#: probability of 6e-7 per statistic for a correct sampler (18 statistics per call), so a failure
#: means a biased sampler, not bad luck. Seeds are fixed, so runs are deterministic anyway.
Z_BOUND = 5.0


def make_gmm() -> GaussianMixture:
    """Three well-separated, correlated components: any two means are > 8 standard deviations
    apart along the line joining them, so assigning a sample to its most responsible component
    mislabels a fraction < 1e-9 and truncates no measurable tail."""
    return GaussianMixture(
        weights=[0.5, 0.3, 0.2],
        means=[[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]],
        covs=[[[0.25, 0.10], [0.10, 0.16]],
              [[0.09, -0.05], [-0.05, 0.20]],
              [[0.30, 0.00], [0.00, 0.05]]],
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the machine is shared, and tiny 2-D batches only lose to thread overhead: one core
    # per test module (module scope so module-level fixtures run under it too)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def gmm() -> GaussianMixture:
    """The reference mixture (read-only, shared)."""
    return make_gmm()


def component_z_scores(x: torch.Tensor, gmm: GaussianMixture) -> dict[str, float]:
    """Largest |z| of the weights, means and covariance entries of ``x`` against ``gmm``.

    Samples are assigned to their most responsible component. Standard errors for n draws:
    weight ``sqrt(w(1 − w)/n)``; mean ``sqrt(Σ_ii/n_k)``; covariance entry (Gaussian data)
    ``sqrt((Σ_ii Σ_jj + Σ_ij²)/n_k)``.
    """
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        return {"weight": math.inf, "mean": math.inf, "cov": math.inf}
    labels = gmm.responsibilities(x).argmax(1)
    n = x.shape[0]
    worst = {"weight": 0.0, "mean": 0.0, "cov": 0.0}
    for k in range(gmm.n_components):
        w, mu, cov = float(gmm.weights[k]), gmm.means[k], gmm.covs[k]
        xs = x[labels == k]
        n_k = xs.shape[0]
        if w < 1:
            worst["weight"] = max(worst["weight"], abs(n_k / n - w) / math.sqrt(w * (1 - w) / n))
        if n_k < 10:
            return {"weight": math.inf, "mean": math.inf, "cov": math.inf}
        diag = torch.diagonal(cov)
        z_mean = (xs.mean(0) - mu).abs() / torch.sqrt(diag / n_k)
        se_cov = torch.sqrt((diag[:, None] * diag[None, :] + cov ** 2) / n_k)
        z_cov = (torch.cov(xs.T) - cov).abs() / se_cov
        worst["mean"] = max(worst["mean"], float(z_mean.max()))
        worst["cov"] = max(worst["cov"], float(z_cov.max()))
    return worst


def assert_matches_gmm(x: torch.Tensor, gmm: GaussianMixture, who: str = "samples") -> None:
    z = component_z_scores(x, gmm)
    bad = {k: round(v, 2) for k, v in z.items() if v > Z_BOUND}
    if bad:
        raise AssertionError(f"{who}: statistics off by more than {Z_BOUND} standard errors: "
                             f"{bad} (all: { {k: round(v, 2) for k, v in z.items()} })")


@pytest.fixture(scope="session")
def matches_gmm():
    """The checker :func:`assert_matches_gmm` as a fixture (tests import nothing from here)."""
    return assert_matches_gmm


@pytest.fixture(scope="session")
def z_scores():
    """:func:`component_z_scores` as a fixture."""
    return component_z_scores
