"""One value per topic that its smoke run can already decide (an exact identity, a check against
a peer, a convergence that must hold), beyond test_smoke.py's completion and key names.

Each topic's smoke preset runs at most once per session (module-scoped cache), and only for the
topics checked here, so the file's CPU cost is that of those smoke runs (about a second or two
each). Topics left out are listed in ``NOT_CHECKED`` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from deepnotes.core.registry import load_experiment, topic_slugs


def _all_below(prefix: str, bound: float):
    def check(m):
        vals = {k: v for k, v in m.items() if k.startswith(prefix)}
        assert vals, f"no metric starts with {prefix}"
        bad = {k: v for k, v in vals.items() if not abs(v) <= bound}
        assert not bad, bad
    return check


CHECKS = {
    # exact: the receptive field read off the gradient's support equals the layer arithmetic
    "receptive-field": lambda m: (m["resnet/support_matches_span"] == 1
                                  and m["resnet/theoretical_size_px"]
                                  == m["resnet/gradient_support_size_px"]),
    # exact: machine epsilons of the three formats
    "mixed-precision": lambda m: (m["facts/fp32_eps"] == 2.0 ** -23
                                  and m["facts/bf16_eps"] == 2.0 ** -7
                                  and m["facts/fp16_eps"] == 2.0 ** -10),
    # our COCO AP equals pycocotools' on the same detections
    "mean-average-precision": lambda m: math.isclose(m["coco/AP"], m["peer/pycocotools_AP"],
                                                     abs_tol=1e-9),
    # the perceptron with a bias converges on separable data: a clean last epoch
    "bias-in-neural-networks": lambda m: (m["perceptron/with_bias_converged"] == 1
                                          and m["perceptron/with_bias_last_epoch_mistakes"] == 0),
    # our bilinear upsampling equals torch's interpolate
    "upsampling": lambda m: m["check/max_abs_diff_vs_torch"] < 1e-5,
    # V(G, D*) = 2 JS - log 4 at the optimal discriminator
    "gan": lambda m: m["dstar/identity_abs_error_nats"] < 1e-4,
    # exact chain-rule identities on a patch (KL = cross-entropy - entropy, ...)
    "generative-modeling-basics": lambda m: m["exact/max_identity_gap_nats"] < 1e-12,
    # the exact-velocity (oracle) flow's likelihood equals the true density's
    "flows-vs-diffusion": lambda m: abs(m["toy/8-gaussians_oracle_minus_true_nats"]) < 1e-3,
    # full-batch gradient descent on the mean reaches it to rounding
    "stochastic-approximation": lambda m: m["mean_est/full_final_distance"] < 1e-12,
    # every activation and its gradient equal torch's
    "activation-functions": _all_below("check/", 1e-6),
}

NOT_CHECKED = {
    # smoke presets train for a handful of steps: their losses, accuracies, FIDs and value
    # errors are not yet meaningful, and no exact identity is logged
    slug: "smoke metrics decide nothing (a few training steps; no exact check logged)"
    for slug in ("actor-critic", "adam-vs-adamw", "autoregressive-models",
                 "classifier-guidance", "diffusion-sde", "edm", "gbdt-to-xgboost", "medusa",
                 "monte-carlo-rl", "nice", "normalizing-flows", "online-action-detection",
                 "policy-gradient", "rectified-flow", "reparameterization",
                 "self-supervised-learning", "temporal-difference", "training-accuracy",
                 "value-function-methods", "vqgan", "wasserstein-gan")
}
NOT_CHECKED.update({
    "ensemble-learning": "checked by tests/boosting (smoke takes ~7 s CPU; its accuracies on "
                         "20 trees are not decisive)",
    "sliding-window-maximum": "its exactness check raises inside the run; the metrics are speeds",
    "flash-attention": "smoke preset failed in the collecting session (not investigated here)",
    "ddpg": "topic added while this file was written; its smoke metrics not yet inspected",
    "trpo": "topic added while this file was written; its smoke metrics not yet inspected",
})

_RUNS: dict = {}


@pytest.fixture(scope="module")
def smoke_metrics(tmp_path_factory):
    def get(slug):
        if slug not in _RUNS:
            module = load_experiment(slug)
            out = tmp_path_factory.mktemp(slug.replace("-", "_"))
            config = dataclasses.replace(module.PRESETS["smoke"], out=str(out), device="cpu")
            result = module.run(config)
            _RUNS[slug] = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
        return _RUNS[slug]
    return get


@pytest.mark.parametrize("slug", sorted(CHECKS))
def test_smoke_value(slug, smoke_metrics):
    ok = CHECKS[slug](smoke_metrics(slug))
    assert ok is None or ok, f"{slug}: smoke value check failed"


def test_every_topic_is_checked_or_listed():
    missing = set(topic_slugs()) - set(CHECKS) - set(NOT_CHECKED)
    assert not missing, f"add a check or a reason for: {sorted(missing)}"
