"""Ensembles: bagging and random forests, AdaBoost (SAMME) and stacking, beside scikit-learn.

Bundled data, one stratified 75/25 train/test split per dataset drawn from the run's seed:
breast_cancer (binary), digits (ten classes, 8x8 images) and diabetes (regression). Every model
of ours (``deepnotes.boosting.forest`` / ``ensemble`` / ``gbdt``) runs beside scikit-learn's
counterpart with the same hyper-parameters.

Figures:

- ``error_vs_learners``: test error (1 - accuracy, or RMSE on diabetes) against the number of
  learners: random forest and bagged trees (averaging, Eq. 2) against AdaBoost and gradient
  boosting (sequential, Eqs. 3-5), ours solid, scikit-learn's dashed.
- ``bias_variance``: on diabetes, models refit on ``n_repeats`` random halves of the training set;
  the squared bias (plus noise) and the variance of their test predictions against the number of
  learners, for a random forest and for gradient boosting.
- ``adaboost_weights``: SAMME's sample weights on breast_cancer over the rounds (rows sorted by
  their last weight), the weighted error and vote of every round, and the effective sample size
  ``1 / (n sum_i w_i^2)`` of the weights (Eq. 4).
- ``stacking``: test score of each base learner and of the stack on each dataset (Eq. 6), ours
  beside scikit-learn's.

``forests_over_splits`` repeats the forests on ``n_splits`` random splits and logs the mean and
spread of (ours - scikit-learn). Headline: our random forest's test accuracy on digits; peer:
scikit-learn's, same parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn import ensemble as sk
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier as SkTree

from deepnotes.boosting import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.ensemble import AdaBoostClassifier, StackingClassifier, StackingRegressor
from deepnotes.boosting.forest import (
    DecisionTreeClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import load_digits


@dataclass
class Config(ExperimentConfig):
    n_learners: int = 300
    """Largest ensemble of the curves: trees of the forests, rounds of AdaBoost and GBDT."""
    n_trees: int = 100
    """Trees of the random forests compared with scikit-learn and stacked (headline)."""
    ada_rounds: int = 100
    """Rounds of the AdaBoost models compared with scikit-learn and stacked."""
    ada_max_depth: int = 2
    """Depth of AdaBoost's trees (1 = stumps)."""
    gbdt_learning_rate: float = 0.1
    """Shrinkage of the gradient-boosting curves (``deepnotes.boosting.GBDT*``)."""
    gbdt_max_depth: int = 3
    """Depth of the gradient-boosting trees."""
    n_repeats: int = 20
    """Refits on random halves of diabetes' training set for the bias-variance figure."""
    stack_cv: int = 5
    """Folds of the out-of-fold meta-features (Eq. 6)."""
    n_splits: int = 5
    """Random train/test splits (seeds seed, seed+1, ...) over which the forests' test scores,
    ours minus scikit-learn's, are repeated: the headline's gap beside split-to-split noise."""
    n_jobs: int = 2
    """Threads for ours and scikit-learn."""


PRESETS = make_presets(
    smoke=Config(n_learners=6, n_trees=8, ada_rounds=5, n_repeats=2, stack_cv=2, n_splits=1),
    quick=Config(n_learners=30, n_trees=30, ada_rounds=20, n_repeats=3, stack_cv=3, n_splits=2),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "its trees are numba and numpy"
HEADLINE = "digits/rf_test_accuracy"
PEER = "digits/sklearn_rf_test_accuracy"

DATASETS = ("breast_cancer", "digits", "diabetes")


def load_splits(seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Each dataset as ``(X_train, X_test, y_train, y_test)``, 75/25 (stratified classes)."""
    X_dg, y_dg = load_digits(split="all", flatten=True)
    data = {"breast_cancer": load_breast_cancer(return_X_y=True),
            "digits": (X_dg.astype(np.float64), y_dg),
            "diabetes": load_diabetes(return_X_y=True)}
    return {name: tuple(train_test_split(X, y, test_size=0.25, random_state=seed,
                                         stratify=None if name == "diabetes" else y))
            for name, (X, y) in data.items()}


def _steps(n: int) -> np.ndarray:
    """Ensemble sizes on a log scale, 1..n."""
    return np.unique(np.round(np.geomspace(1, n, num=min(n, 25))).astype(int))


def _error(name, y, pred):
    """1 - accuracy from class scores (n, K), or RMSE from values (n,)."""
    if name == "diabetes":
        return float(np.sqrt(np.mean((y - pred) ** 2)))
    return float(np.mean(pred.argmax(1) != y))


def _forest_curve(name, per_tree, y, steps, classes=None):
    """Test error of the first m trees' mean (Eq. 2) for m in ``steps``; per_tree (T, n, K)."""
    running = np.cumsum(per_tree, axis=0)
    out = []
    for m in steps:
        mean = running[m - 1] / m
        out.append(_error(name, y, mean[:, 0] if name == "diabetes" else mean))
    return np.array(out)


def _staged_error(name, staged, y, steps):
    preds = list(staged)
    out = []
    for m in steps:
        p = preds[min(m, len(preds)) - 1]
        if name == "diabetes":
            out.append(_error(name, y, p))
        else:
            out.append(float(np.mean(p != y)))
    return np.array(out)


def learner_curves(cfg: Config, splits, run) -> dict:
    """Test error vs number of learners for bagging-type and boosting-type ensembles."""
    steps = _steps(cfg.n_learners)
    curves = {}
    for name in run.track(DATASETS, "error vs learners"):
        Xtr, Xte, ytr, yte = splits[name]
        reg = name == "diabetes"
        c = {}
        kw = dict(n_estimators=cfg.n_learners, random_state=cfg.seed, n_jobs=cfg.n_jobs)
        for label, mf in (("random forest", None if not reg else 1 / 3), ("bagged trees", 1.0)):
            ours = (RandomForestRegressor if reg else RandomForestClassifier)(
                max_features=mf if mf is not None else "sqrt", **kw).fit(Xtr, ytr)
            c[label] = _forest_curve(name, ours.tree_predictions(Xte), yte, steps)
            ref = (sk.RandomForestRegressor if reg else sk.RandomForestClassifier)(
                max_features=mf if mf is not None else "sqrt", **kw).fit(Xtr, ytr)
            per = np.stack([(e.predict(Xte)[:, None] if reg else e.predict_proba(Xte))
                            for e in ref.estimators_])
            c[f"sklearn {label}"] = _forest_curve(name, per, yte, steps)
        gb_kw = dict(n_estimators=cfg.n_learners, learning_rate=cfg.gbdt_learning_rate,
                     max_depth=cfg.gbdt_max_depth, n_jobs=cfg.n_jobs, random_state=cfg.seed)
        gb = (GBDTRegressor if reg else GBDTClassifier)(**gb_kw).fit(Xtr, ytr)
        c["gradient boosting"] = _staged_error(name, gb.staged_predict(Xte), yte, steps)
        if not reg:
            ada = AdaBoostClassifier(DecisionTreeClassifier(max_depth=cfg.ada_max_depth),
                                     n_estimators=cfg.n_learners, random_state=cfg.seed)
            c["AdaBoost"] = _staged_error(name, ada.fit(Xtr, ytr).staged_predict(Xte), yte, steps)
            ref = sk.AdaBoostClassifier(SkTree(max_depth=cfg.ada_max_depth),
                                        n_estimators=cfg.n_learners, random_state=cfg.seed)
            c["sklearn AdaBoost"] = _staged_error(name, ref.fit(Xtr, ytr).staged_predict(Xte),
                                                  yte, steps)
        curves[name] = c
        for label, curve in c.items():
            key = label.replace(" ", "_")
            run.log_metrics({f"{name}/{key}_final_test_error": curve[-1]})
    fig, grid = new_figure(2, 2, size="column_grid", layout="constrained")
    axes = grid.ravel()[:3]
    colours = {"random forest": PALETTE[0], "bagged trees": PALETTE[2], "AdaBoost": PALETTE[3],
               "gradient boosting": PALETTE[1]}
    for ax, name in zip(axes, DATASETS, strict=True):
        for label, curve in curves[name].items():
            base = label.removeprefix("sklearn ")
            ax.plot(steps, curve, color=colours[base], ls="--" if label.startswith("sklearn")
                    else "-", label=(label.replace("sklearn", "scikit-learn")
                                     if name == "breast_cancer" or base == label else None))
        ax.set_xscale("log")
        ax.set_xlabel("number of learners")
        ax.set_ylabel("test RMSE" if name == "diabetes" else r"test error ($1-$accuracy)")
        ax.set_title(name.replace("_", " "))
    grid[1, 1].axis("off")
    grid[1, 1].legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9,
                      title="solid: ours, dashed: scikit-learn", title_fontsize=9)
    fig.suptitle("Averaging (bagging, forests) vs sequential (boosting) ensembles")
    run.save_figure(fig, "error_vs_learners")
    return curves


def bias_variance(cfg: Config, splits, run) -> dict:
    """Squared bias (+ noise) and variance of test predictions over refits on random halves."""
    Xtr, Xte, ytr, yte = splits["diabetes"]
    steps = _steps(cfg.n_learners)
    preds = {"random forest": [], "gradient boosting": []}
    rng = run.rng
    for _ in run.track(range(cfg.n_repeats), "bias-variance refits"):
        rows = rng.choice(len(Xtr), len(Xtr) // 2, replace=False)
        seed = int(rng.integers(2**31 - 1))
        rf = RandomForestRegressor(n_estimators=cfg.n_learners, max_features=1 / 3,
                                   random_state=seed, n_jobs=cfg.n_jobs).fit(Xtr[rows],
                                                                              ytr[rows])
        running = np.cumsum(rf.tree_predictions(Xte)[:, :, 0], axis=0)
        preds["random forest"].append(np.stack([running[m - 1] / m for m in steps]))
        gb = GBDTRegressor(n_estimators=cfg.n_learners, learning_rate=cfg.gbdt_learning_rate,
                           max_depth=cfg.gbdt_max_depth, n_jobs=cfg.n_jobs,
                           random_state=seed).fit(Xtr[rows], ytr[rows])
        staged = list(gb.staged_predict(Xte))
        preds["gradient boosting"].append(np.stack([staged[m - 1] for m in steps]))
    fig, ax = new_figure()
    out = {}
    for (label, p), colour in zip(preds.items(), (PALETTE[0], PALETTE[1]), strict=True):
        p = np.stack(p)  # (repeats, steps, n_test)
        mean = p.mean(axis=0)
        bias2 = np.mean((mean - yte) ** 2, axis=1)
        var = np.mean(p.var(axis=0), axis=1)
        out[label] = (bias2, var)
        ax.plot(steps, bias2, color=colour, label=f"{label}: bias$^2$ + noise")
        ax.plot(steps, var, color=colour, ls=":", label=f"{label}: variance")
        key = label.replace(" ", "_")
        run.log_metrics({f"bias_variance/{key}_bias2": bias2[-1],
                         f"bias_variance/{key}_variance": var[-1],
                         f"bias_variance/{key}_single_learner_variance": var[0]})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of learners")
    ax.set_ylabel("squared error on diabetes' test set")
    ax.set_title(f"Bias and variance over {cfg.n_repeats} refits on random halves")
    ax.legend(fontsize=8)
    run.save_figure(fig, "bias_variance")
    return out


def adaboost_weights(cfg: Config, splits, run) -> None:
    """SAMME's sample weights over rounds on breast_cancer (stumps, Eq. 4)."""
    Xtr, _, ytr, _ = splits["breast_cancer"]
    ada = AdaBoostClassifier(n_estimators=cfg.ada_rounds, random_state=cfg.seed).fit(Xtr, ytr)
    W = ada.sample_weights_  # (rounds, n)
    order = np.argsort(W[-1])
    fig, grid = new_figure(2, 2, size="column_grid", layout="constrained")
    for ax in grid[0]:
        ax.remove()
    axes = (fig.add_subplot(grid[0, 0].get_gridspec()[0, :]), grid[1, 0], grid[1, 1])
    im = axes[0].imshow(np.log10(W[:, order] * W.shape[1]).T, aspect="auto", cmap="viridis",
                        origin="lower", interpolation="nearest")
    fig.colorbar(im, ax=axes[0], label=r"$\log_{10}(n\,w_i)$")
    axes[0].set_xlabel(r"round $m$")
    axes[0].set_ylabel("training row\n(sorted by last weight)")
    axes[0].set_title("sample weights")
    axes[0].grid(False)
    rounds = np.arange(1, len(ada.estimator_errors_) + 1)
    axes[1].plot(rounds, ada.estimator_errors_, color=PALETTE[3],
                 label=r"weighted error $\mathrm{err}_m$")
    axes[1].plot(rounds, ada.estimator_weights_ / ada.estimator_weights_.max(), color=PALETTE[0],
                 label=r"vote $\alpha_m / \alpha_{\max}$")
    axes[1].set_xlabel(r"round $m$")
    axes[1].set_title("error and vote per round")
    axes[1].legend(fontsize=9)
    ess = 1.0 / (W.shape[1] * np.sum(W**2, axis=1))
    axes[2].plot(np.arange(1, len(ess) + 1), ess, color=PALETTE[2])
    axes[2].set_xlabel(r"round $m$")
    axes[2].set_ylabel(r"effective sample size / $n$")
    axes[2].set_title("weight concentration")
    fig.suptitle("AdaBoost (SAMME, stumps) on breast cancer")
    run.save_figure(fig, "adaboost_weights")
    top = np.sort(W[-1])[::-1][: max(1, W.shape[1] // 20)].sum()
    run.log_metrics({"adaboost/last_round_top5pct_weight_share": top,
                     "adaboost/last_round_effective_sample_fraction": ess[-1],
                     "adaboost/first_round_error": ada.estimator_errors_[0],
                     "adaboost/mean_error_last_10_rounds": np.mean(ada.estimator_errors_[-10:])})


def side_by_side(cfg: Config, splits, run) -> None:
    """Forest, AdaBoost and stacking: ours vs scikit-learn, test score and fit time."""
    scores = {}
    for name in run.track(DATASETS, "ours vs scikit-learn"):
        Xtr, Xte, ytr, yte = splits[name]
        reg = name == "diabetes"
        rf_kw = dict(n_estimators=cfg.n_trees, random_state=cfg.seed, n_jobs=cfg.n_jobs)
        ada_kw = dict(n_estimators=cfg.ada_rounds, random_state=cfg.seed)
        linear = (RidgeCV() if reg else
                  make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)))
        if reg:
            models = {"random forest": (RandomForestRegressor(oob_score=True, **rf_kw),
                                        sk.RandomForestRegressor(oob_score=True, **rf_kw))}
        else:
            models = {
                "random forest": (RandomForestClassifier(oob_score=True, **rf_kw),
                                  sk.RandomForestClassifier(oob_score=True, **rf_kw)),
                "AdaBoost": (AdaBoostClassifier(DecisionTreeClassifier(
                    max_depth=cfg.ada_max_depth), **ada_kw),
                             sk.AdaBoostClassifier(SkTree(max_depth=cfg.ada_max_depth),
                                                   **ada_kw))}
        models["linear"] = (linear, linear)
        stack_cls, sk_stack = ((StackingRegressor, sk.StackingRegressor) if reg else
                               (StackingClassifier, sk.StackingClassifier))
        models["stacking"] = (
            stack_cls([(k, v[0]) for k, v in models.items()], cv=cfg.stack_cv),
            sk_stack([(k, v[1]) for k, v in models.items()], cv=cfg.stack_cv))
        scores[name] = {}
        for label, (ours, ref) in models.items():
            key = label.replace(" ", "_").lower()
            row = {}
            for who, est in (("ours", ours), ("sklearn", ref)):
                if label == "linear" and who == "sklearn":
                    row[who] = row["ours"]
                    continue
                t0 = time.perf_counter()
                est.fit(Xtr, ytr)
                fit_s = time.perf_counter() - t0
                row[who] = est.score(Xte, yte)
                prefix = "" if who == "ours" else "sklearn_"
                metric = "r2" if reg else "accuracy"
                run.log_metrics({f"{name}/{prefix}{key}_test_{metric}": row[who],
                                 f"{name}/{prefix}{key}_fit_s": fit_s})
                if label == "random forest":
                    run.log_metrics({f"{name}/{prefix}rf_oob_{metric}": est.oob_score_})
            scores[name][label] = row
        rf_key = "r2" if reg else "accuracy"
        run.log_metrics({f"{name}/rf_test_{rf_key}": scores[name]["random forest"]["ours"],
                         f"{name}/sklearn_rf_test_{rf_key}":
                             scores[name]["random forest"]["sklearn"]})
        run.log(f"{name}: " + ", ".join(f"{k} {v['ours']:.4f} (sklearn {v['sklearn']:.4f})"
                                        for k, v in scores[name].items()))
    fig, grid = new_figure(2, 2, size="column_grid", layout="constrained")
    axes = grid.ravel()[:3]
    for ax, name in zip(axes, DATASETS, strict=True):
        labels = list(scores[name])
        x = np.arange(len(labels))
        ours = [scores[name][k]["ours"] for k in labels]
        ref = [scores[name][k]["sklearn"] for k in labels]
        ax.bar(x - 0.2, ours, width=0.4, color=PALETTE[0], label="ours")
        ax.bar(x + 0.2, ref, width=0.4, color=PALETTE[1], label="scikit-learn")
        lo = min(ours + ref)
        ax.set_ylim(max(0.0, lo - 0.1 * (1 - lo) - 0.02), min(1.0, max(ours + ref) + 0.02))
        ax.set_xticks(x, labels, rotation=20, fontsize=9)
        ax.set_ylabel("test $R^2$" if name == "diabetes" else "test accuracy")
        ax.set_title(name.replace("_", " "))
    grid[1, 1].axis("off")
    grid[1, 1].legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=9)
    fig.suptitle(f"Base learners and their stack ({cfg.stack_cv}-fold out-of-fold "
                 "meta-features)")
    run.save_figure(fig, "stacking")


def forests_over_splits(cfg: Config, run) -> None:
    """Random forest test score, ours minus scikit-learn's, over ``n_splits`` random splits."""
    diffs = {name: [] for name in DATASETS}
    for k in run.track(range(cfg.n_splits), "forests over splits"):
        splits = load_splits(cfg.seed + k)
        for name in DATASETS:
            Xtr, Xte, ytr, yte = splits[name]
            reg = name == "diabetes"
            kw = dict(n_estimators=cfg.n_trees, random_state=cfg.seed + k, n_jobs=cfg.n_jobs)
            ours = (RandomForestRegressor if reg else RandomForestClassifier)(**kw)
            ref = (sk.RandomForestRegressor if reg else sk.RandomForestClassifier)(**kw)
            diffs[name].append(ours.fit(Xtr, ytr).score(Xte, yte)
                               - ref.fit(Xtr, ytr).score(Xte, yte))
    for name, d in diffs.items():
        run.log_metrics({f"{name}/rf_minus_sklearn_mean_over_splits": np.mean(d),
                         f"{name}/rf_minus_sklearn_std_over_splits": np.std(d)})
        run.log(f"{name}: forest score ours - scikit-learn over {cfg.n_splits} splits: "
                f"mean {np.mean(d):+.4f}, std {np.std(d):.4f}")


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        splits = load_splits(config.seed)
        side_by_side(config, splits, run)
        adaboost_weights(config, splits, run)
        learner_curves(config, splits, run)
        bias_variance(config, splits, run)
        forests_over_splits(config, run)
    return run.result
