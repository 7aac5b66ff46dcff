"""From gradient boosting's first-order fit to XGBoost's second-order regularised objective.

Everything runs on bundled real data with one fixed train / validation / test split per dataset
(60 / 20 / 20, stratified for the classifiers, drawn from the run's seed): breast_cancer (binary),
diabetes (regression) and the 8x8 digits (ten classes). ``deepnotes.boosting`` and xgboost
(``tree_method='hist'``) get identical hyper-parameters; our ``gamma`` is half of xgboost's
(see ``deepnotes.boosting.splitting``), so xgboost receives ``2 * gamma``.

Figures:

- ``curves``: training and validation loss per round (``evals_result_``), ours against xgboost,
  on the three datasets.
- ``sweeps``: validation log loss per round on breast_cancer while one of ``reg_lambda``,
  ``gamma``, ``learning_rate`` or ``max_depth`` varies (Eqs. 3, 4 and 1 of the post).
- ``importance``: gain, weight and cover importances (``get_score``) of the breast_cancer model.
- ``first_vs_second_order``: the same trees grown from a custom objective that returns the
  logistic gradient with ``hess = 1`` (plain gradient boosting: each leaf is the mean residual)
  against the logistic hessian ``p (1 - p)`` (Newton boosting, Eqs. 3 and 6), same learning
  rate.

Headline: our breast_cancer test log loss; peer: xgboost's with the same hyper-parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from deepnotes.boosting import GBDTClassifier, GBDTRegressor, auc, logloss, mlogloss, rmse
from deepnotes.boosting.objectives import sigmoid
from deepnotes.core.experiment import ExperimentConfig, Result, make_presets, start_run
from deepnotes.core.plotting import PALETTE, new_figure
from deepnotes.data import load_digits


@dataclass
class Config(ExperimentConfig):
    n_estimators: int = 300
    """Boosting rounds of every model (no early stopping: curves show all rounds)."""
    learning_rate: float = 0.1
    """Shrinkage eta of the reference models (Eq. 1)."""
    max_depth: int = 4
    """Depth of the reference models' trees."""
    reg_lambda: float = 1.0
    """L2 penalty lambda of the reference models (Eq. 3)."""
    gamma: float = 0.0
    """Minimum split gain of the reference models, our (paper's) scale: xgboost gets 2*gamma."""
    min_child_weight: float = 1.0
    """Minimum hessian sum per child."""
    max_bin: int = 256
    """Histogram bins per feature."""
    lambdas: tuple[float, ...] = (0.0, 1.0, 10.0, 100.0)
    """reg_lambda values of the sweep."""
    gammas: tuple[float, ...] = (0.0, 0.5, 2.0, 8.0)
    """gamma values of the sweep (our scale)."""
    learning_rates: tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 1.0)
    """learning_rate values of the sweep."""
    depths: tuple[int, ...] = (1, 2, 4, 6, 8)
    """max_depth values of the sweep."""
    first_order_lr_factors: tuple[float, ...] = (1.0, 4.0)
    """Learning rates of the hess=1 model, as multiples of learning_rate (1: the same)."""
    n_splits: int = 10
    """Random splits (seeds seed, seed+1, ...) over which breast_cancer's ours-vs-xgboost test
    log loss is repeated, to put the headline's difference beside split-to-split noise."""
    n_jobs: int = 2
    """Threads for ours (numba) and xgboost."""


PRESETS = make_presets(
    smoke=Config(n_estimators=10, lambdas=(0.0, 10.0), gammas=(0.0, 2.0),
                 learning_rates=(0.1, 0.3), depths=(2, 4), first_order_lr_factors=(1.0,),
                 n_splits=2),
    quick=Config(n_estimators=100, lambdas=(0.0, 10.0, 100.0), gammas=(0.0, 2.0, 8.0),
                 learning_rates=(0.03, 0.1, 0.3), depths=(1, 4, 8), n_splits=3),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "its kernels are numba; the peers run on the CPU too"
HEADLINE = "breast_cancer/test_logloss"
PEER = "breast_cancer/xgboost_test_logloss"

#: Metric each task's curves use (the default of its objective in both libraries).
METRIC = {"breast_cancer": "logloss", "diabetes": "rmse", "digits": "mlogloss"}


def load_splits(seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Each dataset as ``(X_train, y_train, X_valid, y_valid, X_test, y_test)``: 60/20/20."""
    X_bc, y_bc = load_breast_cancer(return_X_y=True)
    X_db, y_db = load_diabetes(return_X_y=True)
    X_dg, y_dg = load_digits(split="all", flatten=True)
    out = {}
    for name, X, y, strat in (("breast_cancer", X_bc, y_bc, True), ("diabetes", X_db, y_db, False),
                              ("digits", X_dg.astype(np.float64), y_dg, True)):
        Xa, Xte, ya, yte = train_test_split(X, y, test_size=0.2, random_state=seed,
                                            stratify=y if strat else None)
        Xtr, Xva, ytr, yva = train_test_split(Xa, ya, test_size=0.25, random_state=seed,
                                              stratify=ya if strat else None)
        out[name] = (Xtr, ytr, Xva, yva, Xte, yte)
    return out


def shared_params(cfg: Config, **override) -> dict:
    """Hyper-parameters for our estimators (xgboost's names); ``override`` replaces some."""
    p = dict(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
             max_depth=cfg.max_depth, reg_lambda=cfg.reg_lambda, gamma=cfg.gamma,
             min_child_weight=cfg.min_child_weight, max_bin=cfg.max_bin, tree_method="hist",
             n_jobs=cfg.n_jobs, random_state=cfg.seed)
    p.update(override)
    return p


def xgboost_model(task: str, params: dict):
    """The xgboost estimator with our parameters; its gamma is twice ours (Eq. 4)."""
    import xgboost as xgb

    p = dict(params)
    p["gamma"] = 2.0 * p["gamma"]
    if task == "diabetes":
        return xgb.XGBRegressor(eval_metric="rmse", **p)
    return xgb.XGBClassifier(eval_metric=METRIC[task], **p)


def our_model(task: str, params: dict):
    return GBDTRegressor(**params) if task == "diabetes" else GBDTClassifier(**params)


def test_scores(task: str, model, X, y) -> dict[str, float]:
    """Test metrics of a fitted model (ours or xgboost: both follow scikit-learn's API)."""
    if task == "diabetes":
        return {"rmse": rmse(y, model.predict(X))}
    proba = model.predict_proba(X)
    acc = float(np.mean(np.argmax(proba, axis=1) == y))
    if task == "digits":
        return {"mlogloss": mlogloss(y, proba), "accuracy": acc}
    return {"logloss": logloss(y, proba[:, 1]), "auc": auc(y, proba[:, 1]), "accuracy": acc}


def fit_pair(task, params, data):
    """Fit ours and xgboost on ``data``; return both models, curves and train seconds."""
    Xtr, ytr, Xva, yva = data[:4]
    evals = [(Xtr, ytr), (Xva, yva)]
    out = {}
    for who in ("ours", "xgboost"):
        model = our_model(task, params) if who == "ours" else xgboost_model(task, params)
        t0 = time.perf_counter()
        if who == "ours":
            model.fit(Xtr, ytr, eval_set=evals)
            curves = model.evals_result_
        else:
            model.fit(Xtr, ytr, eval_set=evals, verbose=False)
            curves = model.evals_result()
        seconds = time.perf_counter() - t0
        metric = METRIC[task]
        out[who] = (model, np.asarray(curves["validation_0"][metric]),
                    np.asarray(curves["validation_1"][metric]), seconds)
    return out


def logistic_objective(first_order: bool):
    """Custom binary log-loss objective on raw scores: gradient ``p - y`` and hessian
    ``p (1 - p)`` (Newton, Eq. 2) or ``1`` (first order: trees fit the residuals)."""

    def objective(y, raw):
        p = sigmoid(raw)
        return p - y, (np.ones_like(p) if first_order else p * (1.0 - p))

    return objective


def staged_logloss(model: GBDTRegressor, X, y) -> np.ndarray:
    """Validation log loss after each round of a raw-score model trained with a custom objective."""
    return np.array([logloss(y, sigmoid(raw)) for raw in model.staged_predict(X)])


def run(config: Config) -> Result:
    with start_run(__name__, config) as run:
        cfg = config
        splits = load_splits(cfg.seed)
        for name, d in splits.items():
            run.log(f"{name}: train {len(d[1])}, valid {len(d[3])}, test {len(d[5])}, "
                    f"{d[0].shape[1]} features")

        # --- 1. ours vs xgboost, identical hyper-parameters --------------------------------
        pairs = {}
        for task in run.track(list(splits), "ours vs xgboost"):
            data = splits[task]
            pairs[task] = fit_pair(task, shared_params(cfg), data)
            for who, (model, _, va, secs) in pairs[task].items():
                prefix = "" if who == "ours" else "xgboost_"
                scores = test_scores(task, model, data[4], data[5])
                run.log_metrics({f"{task}/{prefix}test_{k}": v for k, v in scores.items()})
                run.log_metrics({f"{task}/{prefix}train_s": secs,
                                 f"{task}/{prefix}best_valid_{METRIC[task]}": float(va.min())})
                run.log(f"{task} {who}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items())
                        + f" ({secs:.2f} s)")
        fig, axes = new_figure(1, 3, size="wide")
        for ax, task in zip(axes, splits, strict=True):
            for who, color in (("ours", PALETTE[0]), ("xgboost", PALETTE[1])):
                _, tr, va, _ = pairs[task][who]
                rounds = np.arange(1, len(tr) + 1)
                ax.plot(rounds, tr, color=color, ls="--", lw=1.2, label=f"{who} train")
                ax.plot(rounds, va, color=color, lw=1.5, label=f"{who} valid")
            ax.set(title=task, xlabel="round", ylabel=METRIC[task])
            if task != "diabetes":
                ax.set_yscale("log")
        axes[0].legend()
        fig.suptitle(f"Same hyper-parameters (depth {cfg.max_depth}, eta {cfg.learning_rate}, "
                     f"lambda {cfg.reg_lambda})")
        run.save_figure(fig, "curves")

        # breast_cancer again over several splits: 114 test rows make one split's log loss noisy
        diffs = []
        for k in run.track(range(cfg.n_splits), "breast_cancer splits"):
            d = splits["breast_cancer"] if k == 0 else load_splits(cfg.seed + k)["breast_cancer"]
            losses = []
            for model in (our_model("breast_cancer", shared_params(cfg)),
                          xgboost_model("breast_cancer", shared_params(cfg))):
                model.fit(d[0], d[1])
                losses.append(logloss(d[5], model.predict_proba(d[4])[:, 1]))
            diffs.append(losses)
        diffs = np.asarray(diffs)  # (n_splits, 2): ours, xgboost
        delta = diffs[:, 0] - diffs[:, 1]
        run.log_metrics({"splits/ours_test_logloss_mean": float(diffs[:, 0].mean()),
                         "splits/xgboost_test_logloss_mean": float(diffs[:, 1].mean()),
                         "splits/diff_test_logloss_mean": float(delta.mean()),
                         "splits/diff_test_logloss_std": float(delta.std(ddof=1)),
                         "splits/ours_better_count": float(np.sum(delta < 0))})
        run.log(f"{cfg.n_splits} splits: test logloss ours {diffs[:, 0].mean():.4f}, xgboost "
                f"{diffs[:, 1].mean():.4f}, ours - xgboost {delta.mean():+.4f} "
                f"(sd {delta.std(ddof=1):.4f}), ours lower on {int(np.sum(delta < 0))}")

        # --- 2. sweeps of lambda, gamma, learning rate and depth on breast_cancer ---------
        bc = splits["breast_cancer"]
        sweeps = {"reg_lambda": cfg.lambdas, "gamma": cfg.gammas,
                  "learning_rate": cfg.learning_rates, "max_depth": cfg.depths}
        jobs = [(param, v) for param, values in sweeps.items() for v in values]
        sweep_curves = {}
        for param, value in run.track(jobs, "sweeps"):
            model = GBDTClassifier(**shared_params(cfg, **{param: value}))
            model.fit(bc[0], bc[1], eval_set=[(bc[2], bc[3])])
            va = np.asarray(model.evals_result_["validation_0"]["logloss"])
            sweep_curves[param, value] = va
            n_leaves = np.mean([int(np.sum(t.left == -1)) for t in model.trees_])
            tag = f"{param}_{value:g}".replace(".", "p")
            run.log_metrics({f"sweep/{tag}_best_valid_logloss": float(va.min()),
                             f"sweep/{tag}_final_valid_logloss": float(va[-1]),
                             f"sweep/{tag}_mean_leaves": float(n_leaves)})
            run.log(f"sweep {param}={value:g}: best valid logloss {va.min():.4f} at round "
                    f"{int(va.argmin()) + 1}, final {va[-1]:.4f}, {n_leaves:.1f} leaves/tree")
        fig, axes = new_figure(2, 2, size="grid", sharey=True)
        for ax, (param, values) in zip(axes.ravel(), sweeps.items(), strict=True):
            for i, v in enumerate(values):
                va = sweep_curves[param, v]
                ax.plot(np.arange(1, len(va) + 1), va, color=PALETTE[i % len(PALETTE)],
                        label=f"{param} = {v:g}")
            ax.set(title=f"varying {param}", xlabel="round", ylabel="validation log loss",
                   yscale="log")
            ax.legend(fontsize=8)
        fig.suptitle("breast_cancer: one hyper-parameter at a time "
                     f"(others: depth {cfg.max_depth}, eta {cfg.learning_rate}, "
                     f"lambda {cfg.reg_lambda}, gamma {cfg.gamma})")
        fig.tight_layout()
        run.save_figure(fig, "sweeps")

        # --- 3. importances of the breast_cancer model -----------------------------------
        ours = pairs["breast_cancer"]["ours"][0]
        names = load_breast_cancer().feature_names
        kinds = ("gain", "weight", "cover")
        imp = {k: ours.get_score(k) / max(ours.get_score(k).sum(), 1e-300) for k in kinds}
        top = np.argsort(imp["gain"])[::-1][:10]
        fig, ax = new_figure(size="wide")
        pos = np.arange(len(top))
        for i, k in enumerate(kinds):
            ax.barh(pos + (i - 1) * 0.27, imp[k][top], height=0.27, color=PALETTE[i], label=k)
        ax.set_yticks(pos, [names[j] for j in top])
        ax.invert_yaxis()
        ax.set(xlabel="share of total importance", title="breast_cancer: top 10 features by gain")
        ax.legend()
        run.save_figure(fig, "importance")
        for k in kinds:
            j = int(np.argmax(imp[k]))
            run.log(f"importance {k}: top feature {str(names[j])!r} ({imp[k][j]:.3f})")
        rank_weight = np.argsort(np.argsort(-imp["weight"]))
        run.log_metrics({"importance/top_gain_share": float(imp["gain"][top[0]]),
                         "importance/top_gain_feature_weight_rank": float(rank_weight[top[0]] + 1)})

        # --- 4. first order (hess = 1) vs second order (logistic hessian) -----------------
        runs_fo = [("second order, eta", 1.0, False)]
        runs_fo += [(f"first order (hess=1), {f:g}·eta", f, True)
                    for f in cfg.first_order_lr_factors]
        fig, ax = new_figure()
        for i, (label, factor, first) in enumerate(run.track(runs_fo, "first vs second order")):
            model = GBDTRegressor(objective=logistic_objective(first),
                                  **shared_params(cfg, learning_rate=cfg.learning_rate * factor))
            model.fit(bc[0], bc[1])
            va = staged_logloss(model, bc[2], bc[3])
            ax.plot(np.arange(1, len(va) + 1), va, color=PALETTE[i], label=label)
            tag = ("second_order" if not first else f"first_order_x{factor:g}").replace(".", "p")
            run.log_metrics({f"{tag}/best_valid_logloss": float(va.min()),
                             f"{tag}/final_valid_logloss": float(va[-1]),
                             f"{tag}/best_round": float(va.argmin() + 1)})
            run.log(f"{label}: best valid logloss {va.min():.4f} at round {va.argmin() + 1}, "
                    f"final {va[-1]:.4f}")
        ax.set(xlabel="round", ylabel="validation log loss", yscale="log",
               title=f"breast_cancer: first- vs second-order boosting (eta = {cfg.learning_rate})")
        ax.legend()
        run.save_figure(fig, "first_vs_second_order")
    return run.result
