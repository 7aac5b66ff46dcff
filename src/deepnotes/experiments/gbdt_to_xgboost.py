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

- ``monotone`` (gbdt-b): partial dependence of diabetes' progression on ``bmi`` and ``s5``,
  unconstrained against ``monotone_constraints`` (ours and xgboost's).
- ``categorical`` (gbdt-b): test log loss and fit time on a generated set whose strongest
  feature is one high-cardinality categorical: native splits, one-hot columns and integer codes
  (ours), xgboost's and LightGBM's categorical support.

- ``shap`` (gbdt-a): SHAP summary of the breast_cancer model on its test rows (each row's
  contribution per feature, coloured by the feature's value) and the top feature's dependence
  plot.
- ``ranking`` (gbdt-a): validation NDCG@10 per round on a generated ranking set with known
  relevance, ours against xgboost's ``XGBRanker`` (``rank:ndcg`` and ``rank:pairwise``), beside
  the NDCG@10 of ranking by the true score. The ``objectives/*`` metrics: test loss and fit time
  of ours and xgboost on a generated target per regression objective.

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
    # gbdt-b: constraints and categorical features
    mono_rounds: int = 200
    """Rounds of the diabetes models of the monotone-constraint section."""
    cat_rows: int = 20000
    """Rows of the generated categorical set (75% train, 25% test)."""
    cat_levels: int = 200
    """Categories of its high-cardinality feature."""
    cat_rounds: int = 200
    """Rounds of every model of the categorical section."""
    # gbdt-a: ranking and the regression objectives
    rank_queries: int = 300
    """Training queries of the generated ranking set (a quarter as many held out)."""
    rank_docs: int = 30
    """Documents per query."""
    rank_rounds: int = 150
    """Rounds of the rankers (ours and xgboost's, rank:ndcg and rank:pairwise)."""
    obj_rows: int = 10000
    """Rows of each generated regression target of the objectives section (75% train)."""
    obj_rounds: int = 200
    """Rounds of every model of the objectives section."""


PRESETS = make_presets(
    smoke=Config(n_estimators=10, lambdas=(0.0, 10.0), gammas=(0.0, 2.0),
                 learning_rates=(0.1, 0.3), depths=(2, 4), first_order_lr_factors=(1.0,),
                 n_splits=2, mono_rounds=20, cat_rows=2000, cat_levels=40, cat_rounds=20,
                 rank_queries=40, rank_docs=10, rank_rounds=10, obj_rows=1000, obj_rounds=10),
    quick=Config(n_estimators=100, lambdas=(0.0, 10.0, 100.0), gammas=(0.0, 2.0, 8.0),
                 learning_rates=(0.03, 0.1, 0.3), depths=(1, 4, 8), n_splits=3,
                 mono_rounds=100, cat_rows=8000, cat_levels=100, cat_rounds=100,
                 rank_queries=100, rank_docs=20, rank_rounds=60, obj_rows=4000, obj_rounds=60),
    full=Config(),
)
#: This topic has no torch work: --device does not apply (said once in the run's log).
CPU_ONLY = "its kernels are numba; the peers run on the CPU too"
HEADLINE = "breast_cancer/test_logloss"
PEER = "breast_cancer/xgboost_test_logloss"

#: Metric each task's curves use (the default of its objective in both libraries).
METRIC = {"breast_cancer": "logloss", "diabetes": "rmse", "digits": "mlogloss"}
#: The tasks and their metrics in words (figure labels).
TASK_TITLES = {"breast_cancer": "breast cancer", "diabetes": "diabetes", "digits": "digits"}
METRIC_LABELS = {"breast_cancer": "log loss", "diabetes": "RMSE",
                 "digits": "multi-class log loss"}
#: Sweep panel titles and the symbol of each swept hyper-parameter (Eqs. 1, 3 and 4).
SWEEP_LABELS = {"reg_lambda": (r"L2 penalty $\lambda$", r"\lambda"),
                "gamma": (r"split penalty $\gamma$", r"\gamma"),
                "learning_rate": (r"learning rate $\eta$", r"\eta"),
                "max_depth": ("maximum depth", r"\mathrm{depth}")}


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
        fig, axes = new_figure(1, 3, size="column_tall", layout="constrained")
        for ax, task in zip(axes, splits, strict=True):
            for who, color in (("ours", PALETTE[0]), ("xgboost", PALETTE[1])):
                _, tr, va, _ = pairs[task][who]
                rounds = np.arange(1, len(tr) + 1)
                ax.plot(rounds, tr, color=color, ls="--", lw=1.2, label=f"{who}, training")
                ax.plot(rounds, va, color=color, lw=1.5, label=f"{who}, validation")
            ax.set(title=TASK_TITLES[task], xlabel="round", ylabel=METRIC_LABELS[task])
            ax.set_xticks(np.arange(0, len(tr) + 1, max(len(tr) // 3, 1)))  # narrow panels
            if task != "diabetes":
                ax.set_yscale("log")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4,
                   fontsize=9)
        fig.suptitle(f"Same hyper-parameters: depth {cfg.max_depth}, "
                     rf"$\eta = {cfg.learning_rate:g}$, $\lambda = {cfg.reg_lambda:g}$")
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
        fig, axes = new_figure(2, 2, size="column_grid", sharey=True, layout="constrained")
        for k, (ax, (param, values)) in enumerate(zip(axes.ravel(), sweeps.items(),
                                                      strict=True)):
            title, symbol = SWEEP_LABELS[param]
            for i, v in enumerate(values):
                va = sweep_curves[param, v]
                ax.plot(np.arange(1, len(va) + 1), va, color=PALETTE[i % len(PALETTE)],
                        label=rf"${symbol} = {v:g}$")
            ax.set(title=title, xlabel="round" if k >= 2 else None,
                   ylabel="validation log loss" if k % 2 == 0 else None, yscale="log")
            ax.legend(fontsize=9, ncol=2, loc="upper right", handlelength=1.2,
                      columnspacing=0.8)
        fig.suptitle(f"Breast cancer, one at a time; others: depth {cfg.max_depth}, "
                     rf"$\eta = {cfg.learning_rate:g}$, $\lambda = {cfg.reg_lambda:g}$, "
                     rf"$\gamma = {cfg.gamma:g}$")
        run.save_figure(fig, "sweeps")

        # --- 3. importances of the breast_cancer model -----------------------------------
        ours = pairs["breast_cancer"]["ours"][0]
        names = load_breast_cancer().feature_names
        kinds = ("gain", "weight", "cover")
        imp = {}
        for k in kinds:  # get_score: a dict over the used features, keyed f0, f1, ...
            score = ours.get_score(k)
            v = np.array([score.get(f"f{j}", 0.0) for j in range(len(names))])
            imp[k] = v / max(v.sum(), 1e-300)
        top = np.argsort(imp["gain"])[::-1][:10]
        fig, ax = new_figure(size="column_tall", layout="constrained")
        pos = np.arange(len(top))
        kind_labels = {"gain": "gain", "weight": "weight (number of splits)",
                       "cover": "cover (hessian sum)"}
        for i, k in enumerate(kinds):
            ax.barh(pos + (i - 1) * 0.27, imp[k][top], height=0.27, color=PALETTE[i],
                    label=kind_labels[k])
        ax.set_yticks(pos, [names[j] for j in top])
        ax.invert_yaxis()
        ax.set(xlabel="share of total importance", title="Breast cancer: top 10 features by gain")
        ax.legend(loc="lower right")
        run.save_figure(fig, "importance")
        for k in kinds:
            j = int(np.argmax(imp[k]))
            run.log(f"importance {k}: top feature {str(names[j])!r} ({imp[k][j]:.3f})")
        rank_weight = np.argsort(np.argsort(-imp["weight"]))
        run.log_metrics({"importance/top_gain_share": float(imp["gain"][top[0]]),
                         "importance/top_gain_feature_weight_rank": float(rank_weight[top[0]] + 1)})

        # --- 4. first order (hess = 1) vs second order (logistic hessian) -----------------
        runs_fo = [(r"second order, step $\eta$", 1.0, False)]
        runs_fo += [(r"first order ($h_i = 1$), step $"
                     + (r"\eta" if f == 1 else rf"{f:g}\,\eta") + "$", f, True)
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
               title=rf"Breast cancer: first- vs second-order ($\eta = {cfg.learning_rate:g}$)")
        ax.legend()
        run.save_figure(fig, "first_vs_second_order")

        # --- gbdt-b: monotone constraints, native categorical splits ---------------------
        monotone_section(run, cfg, splits["diabetes"])
        categorical_section(run, cfg)

        # --- gbdt-a: SHAP figures, ranking, the regression objectives --------------------
        shap_section(run, ours, bc[4], names)
        ranking_section(run, cfg)
        objectives_section(run, cfg)
    return run.result


# --- gbdt-b: monotone constraints and native categorical splits --------------------------------
#: diabetes features constrained to be increasing in the monotone section (both rise with
#: disease progression in the data): body-mass index and the log triglycerides s5.
MONOTONE_FEATURES = {"bmi": 2, "s5": 8}
#: Panel titles of the monotone figure, in words.
MONOTONE_TITLES = {"bmi": "body-mass index (bmi)", "s5": "log triglycerides (s5)"}


def partial_dependence(model, X: np.ndarray, feature: int, grid: np.ndarray) -> np.ndarray:
    """Mean prediction over the rows of ``X`` with ``X[:, feature]`` set to each grid value."""
    Z = np.repeat(X[None], len(grid), axis=0)
    Z[:, :, feature] = grid[:, None]
    return model.predict(Z.reshape(-1, X.shape[1])).reshape(len(grid), len(X)).mean(axis=1)


def monotone_section(run, cfg: Config, data) -> None:
    """diabetes with ``bmi`` and ``s5`` constrained increasing: partial dependence of ours
    unconstrained, ours constrained and xgboost constrained; test RMSE of each."""
    Xtr, ytr, _, _, Xte, yte = data
    mono = [0] * Xtr.shape[1]
    for j in MONOTONE_FEATURES.values():
        mono[j] = 1
    params = shared_params(cfg, n_estimators=cfg.mono_rounds)
    models = {"ours, unconstrained": GBDTRegressor(**params),
              "ours, monotone": GBDTRegressor(monotone_constraints=mono, **params),
              "xgboost, monotone": xgboost_model("diabetes", params).set_params(
                  monotone_constraints=tuple(mono))}
    tags = {"ours, unconstrained": "ours_free", "ours, monotone": "ours_monotone",
            "xgboost, monotone": "xgboost_monotone"}
    for label, model in run.track(list(models.items()), "monotone"):
        model.fit(Xtr, ytr)
        run.log_metrics({f"monotone/{tags[label]}_test_rmse": rmse(yte, model.predict(Xte))})
    fig, axes = new_figure(1, len(MONOTONE_FEATURES), size="column_tall", sharey=True,
                           layout="constrained")
    decreases = dict.fromkeys(tags.values(), 0)
    for ax, (name, j) in zip(axes, MONOTONE_FEATURES.items(), strict=True):
        grid = np.quantile(Xtr[:, j], np.linspace(0.02, 0.98, 60))
        for i, (label, model) in enumerate(models.items()):
            pd_curve = partial_dependence(model, Xtr, j, grid)
            decreases[tags[label]] += int(np.sum(np.diff(pd_curve) < 0))
            ax.plot(grid, pd_curve, color=PALETTE[i], lw=1.6, ls="--" if i == 2 else "-",
                    label=label)
        ax.plot(Xtr[:, j], np.full(len(Xtr), ax.get_ylim()[0]), "|", color="0.6", ms=6)
        ax.set(title=MONOTONE_TITLES[name], xlabel=f"{name} (standardised)")
    axes[0].set_ylabel("mean predicted progression")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
               fontsize=9)
    fig.suptitle("Diabetes: partial dependence, with and without monotone constraints")
    run.save_figure(fig, "monotone")
    run.log_metrics({f"monotone/{t}_pd_decreases": float(v) for t, v in decreases.items()})
    run.log("monotone: partial-dependence decreases " + ", ".join(
        f"{t}={v}" for t, v in decreases.items()))


def categorical_data(n: int, n_levels: int, seed: int):
    """A binary task whose strongest feature is one categorical ``c`` with ``n_levels``
    categories (Zipf-like frequencies, an effect drawn per category), plus four numeric ones:
    ``logit = effect[c] + x0 - x1 / 2 + x2 x3 / 2``. Returns ``c, X_numeric, y``."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, n_levels + 1) ** 0.7
    c = rng.choice(n_levels, size=n, p=freq / freq.sum())
    effect = rng.normal(0.0, 1.5, n_levels)
    x = rng.normal(size=(n, 4))
    logit = effect[c] + x[:, 0] - 0.5 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
    y = (rng.random(n) < sigmoid(logit)).astype(np.int64)
    return c, x, y


#: The encodings and libraries compared on :func:`categorical_data`.
CATEGORICAL_METHODS = ("ours native", "ours one-hot", "ours codes", "xgboost native",
                       "xgboost one-hot", "lightgbm native")
#: Their labels in the figure.
CATEGORICAL_LABELS = {"ours native": "ours, native", "ours one-hot": "ours, one-hot",
                      "ours codes": "ours, integer codes", "xgboost native": "xgboost, native",
                      "xgboost one-hot": "xgboost, one-hot", "lightgbm native": "LightGBM, native"}


def categorical_inputs(method: str, c: np.ndarray, x: np.ndarray, n_levels: int) -> np.ndarray:
    """The design matrix of ``method``: the category code then ``x``, or one-hot columns."""
    if "one-hot" in method:
        return np.hstack([np.eye(n_levels)[c], x])
    return np.hstack([c[:, None].astype(np.float64), x])


def categorical_model(method: str, params: dict):
    """The estimator of ``method`` with our hyper-parameters (column 0 is the category)."""
    if method == "ours native":
        return GBDTClassifier(categorical_features=[0], **params)
    if method.startswith("ours"):
        return GBDTClassifier(**params)
    if method.startswith("xgboost"):
        model = xgboost_model("breast_cancer", params)  # binary log loss, gamma doubled
        if method == "xgboost native":
            # xgboost one-hot-splits below max_cat_to_onehot categories, ours up to it: + 1
            model.set_params(enable_categorical=True, max_cat_to_onehot=5,
                             feature_types=["c", "q", "q", "q", "q"])
        return model
    import lightgbm as lgb

    # LightGBM's own categorical regularisation (cat_smooth, cat_l2, min_data_per_group) kept
    return lgb.LGBMClassifier(
        n_estimators=params["n_estimators"], learning_rate=params["learning_rate"],
        max_depth=params["max_depth"], num_leaves=2 ** params["max_depth"],
        max_bin=params["max_bin"], reg_lambda=params["reg_lambda"],
        min_child_weight=params["min_child_weight"], min_child_samples=1,
        n_jobs=params["n_jobs"], verbose=-1)


def fit_categorical(method: str, model, X: np.ndarray, y: np.ndarray):
    """Fit, telling LightGBM which column is categorical."""
    if method == "lightgbm native":
        return model.fit(X, y, categorical_feature=[0])
    return model.fit(X, y)


def categorical_section(run, cfg: Config) -> None:
    """Native categorical splits against one-hot columns and plain integer codes (ours), and
    against xgboost's and LightGBM's categorical support: test log loss and fit time."""
    c, x, y = categorical_data(cfg.cat_rows, cfg.cat_levels, cfg.seed)
    n_train = int(0.75 * len(y))
    params = shared_params(cfg, n_estimators=cfg.cat_rounds)
    run.log_metrics({"categorical/levels": float(cfg.cat_levels),
                     "categorical/train_rows": float(n_train)})
    results = {}
    for method in run.track(list(CATEGORICAL_METHODS), "categorical"):
        X = categorical_inputs(method, c, x, cfg.cat_levels)
        # a two-round fit first, so the timed fit does not include numba's compilation
        fit_categorical(method, categorical_model(method, {**params, "n_estimators": 2}),
                        X[:n_train], y[:n_train])
        model = categorical_model(method, params)
        t0 = time.perf_counter()
        fit_categorical(method, model, X[:n_train], y[:n_train])
        secs = time.perf_counter() - t0
        proba = model.predict_proba(X[n_train:])[:, 1]
        loss = logloss(y[n_train:], proba)
        acc = float(np.mean((proba > 0.5) == y[n_train:]))
        tag = method.replace(" ", "_").replace("-", "")
        results[method] = (loss, secs)
        run.log_metrics({f"categorical/{tag}_test_logloss": loss,
                         f"categorical/{tag}_test_accuracy": acc,
                         f"categorical/{tag}_fit_s": secs})
        run.log(f"categorical {method}: test logloss {loss:.4f}, accuracy {acc:.4f}, "
                f"fit {secs:.2f} s ({X.shape[1]} columns)")
    fig, axes = new_figure(1, 2, size="column", layout="constrained")
    pos = np.arange(len(CATEGORICAL_METHODS))
    colors = [PALETTE[0] if m.startswith("ours") else PALETTE[1] if m.startswith("xgboost")
              else PALETTE[2] for m in CATEGORICAL_METHODS]
    for ax, k, label in ((axes[0], 0, "test log loss (lower is better)"),
                         (axes[1], 1, "fit time (s)")):
        values = np.array([results[m][k] for m in CATEGORICAL_METHODS])
        ax.barh(pos, values, color=colors)
        ax.set_yticks(pos, [CATEGORICAL_LABELS[m] for m in CATEGORICAL_METHODS] if k == 0
                      else [""] * len(pos))
        ax.invert_yaxis()
        ax.set(xlabel=label)
        if k == 0:  # the losses differ in the second decimal: start the axis near them
            span = values.max() - values.min()
            ax.set_xlim(values.min() - span, values.max() + 0.3 * span)
    axes[0].set_title("test log loss")
    axes[1].set_title("fit time, one fit each")
    fig.suptitle(f"{cfg.cat_levels} categories, {n_train} training rows, "
                 f"{cfg.cat_rounds} rounds of depth {cfg.max_depth}")
    run.save_figure(fig, "categorical")


# --- gbdt-a: SHAP figures, ranking (LambdaMART), the regression objectives ----------------------
def shap_section(run, model, X: np.ndarray, names, max_features: int = 10) -> None:
    """SHAP summary (one dot per row and feature: its contribution, coloured by the feature's
    value) and a dependence plot of the top feature for our breast_cancer model."""
    contrib = model.predict_contributions(X)  # (n, d + 1), raw (log-odds) units
    raw = model.decision_function_raw(X)[:, 0]
    run.log_metrics({"shap/max_additivity_error": float(np.max(np.abs(contrib.sum(1) - raw)))})
    phi = contrib[:, :-1]
    mean_abs = np.abs(phi).mean(axis=0)
    top = np.argsort(mean_abs)[::-1][:max_features]
    run.log_metrics({"shap/top_mean_abs": float(mean_abs[top[0]]),
                     "shap/top_share": float(mean_abs[top[0]] / mean_abs.sum())})
    run.log(f"shap: top feature {str(names[top[0]])!r}, mean |phi| {mean_abs[top[0]]:.3f} "
            f"({mean_abs[top[0]] / mean_abs.sum():.1%} of the total)")
    rng = np.random.default_rng(0)
    fig, (ax, ax2) = new_figure(1, 2, size=(7.0, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
    for pos, j in enumerate(top):
        v = X[:, j]
        colour = (np.argsort(np.argsort(v)) / max(len(v) - 1, 1))  # value rank in [0, 1]
        ax.scatter(phi[:, j], pos + rng.uniform(-0.3, 0.3, len(v)), c=colour, cmap="coolwarm",
                   s=5, alpha=0.7, linewidths=0)
    ax.set_yticks(range(len(top)), [str(names[j]) for j in top], fontsize=9)
    ax.invert_yaxis()
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.set(xlabel=r"SHAP value $\phi_i(x)$ (log-odds)", title="summary: low (blue) to high (red)")
    j, k = top[0], top[1]
    sc = ax2.scatter(X[:, j], phi[:, j], c=X[:, k], cmap="coolwarm", s=6, alpha=0.8,
                     linewidths=0)
    ax2.set(xlabel=str(names[j]), ylabel=rf"$\phi$ of {names[j]}", title="dependence, top feature")
    cb = fig.colorbar(sc, ax=ax2)
    cb.set_label(str(names[k]), fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "shap")


def ranking_data(n_queries: int, docs: int, seed: int):
    """Queries of ``docs`` documents with 8 features each and a known relevance 0..4: the true
    score ``s = x0 + x1/2 + sin(2 x2) - x3 x4 / 2`` plus noise (sd 0.3), graded by fixed cut
    points. Returns ``X, relevance, qid, s``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_queries * docs, 8))
    s = X[:, 0] + 0.5 * X[:, 1] + np.sin(2 * X[:, 2]) - 0.5 * X[:, 3] * X[:, 4]
    noisy = s + rng.normal(scale=0.3, size=len(s))
    rel = np.digitize(noisy, [0.0, 1.0, 1.8, 2.5]).astype(np.float64)
    return X, rel, np.repeat(np.arange(n_queries), docs), s


def ranking_section(run, cfg) -> None:
    """NDCG@10 per round on held-out queries: ours against xgboost's ``XGBRanker``, both with
    ``rank:ndcg`` and ``rank:pairwise``; and the NDCG@10 of ranking by the true score."""
    import xgboost as xgb

    from deepnotes.boosting.metrics import group_pointer, ndcg
    from deepnotes.boosting.ranking import GBDTRanker

    Xtr, rtr, qtr, _ = ranking_data(cfg.rank_queries, cfg.rank_docs, cfg.seed)
    Xva, rva, qva, sva = ranking_data(max(cfg.rank_queries // 4, 5), cfg.rank_docs, cfg.seed + 1)
    ptr = group_pointer(qid=qva)
    params = shared_params(cfg, n_estimators=cfg.rank_rounds, eval_metric="ndcg@10")
    del params["gamma"]  # 0 in the reference models; xgboost's scale differs (Eq. 4)
    curves, fit_s = {}, {}
    for objective in run.track(("rank:ndcg", "rank:pairwise"), "ranking"):
        for who in ("ours", "xgboost"):
            model = (GBDTRanker(objective=objective, **params) if who == "ours"
                     else xgb.XGBRanker(objective=objective, **params))
            t0 = time.perf_counter()
            kw = {} if who == "ours" else {"verbose": False}
            model.fit(Xtr, rtr, qid=qtr, eval_set=[(Xva, rva)], eval_qid=[qva], **kw)
            fit_s[who, objective] = time.perf_counter() - t0
            curve = np.asarray(model.evals_result()["validation_0"]["ndcg@10"])
            curves[who, objective] = curve
            tag = f"{who}_{objective.split(':')[1]}"
            run.log_metrics({f"rank/{tag}_valid_ndcg10": float(curve[-1]),
                             f"rank/{tag}_best_valid_ndcg10": float(curve.max()),
                             f"rank/{tag}_fit_s": fit_s[who, objective]})
            run.log(f"ranking {objective} {who}: NDCG@10 {curve[-1]:.4f} after {len(curve)} "
                    f"rounds (best {curve.max():.4f}), fit {fit_s[who, objective]:.2f} s")
    oracle = ndcg(rva, sva, ptr, 10)
    shuffled = ndcg(rva, np.random.default_rng(cfg.seed).random(len(rva)), ptr, 10)
    run.log_metrics({"rank/oracle_valid_ndcg10": oracle, "rank/random_valid_ndcg10": shuffled})
    fig, ax = new_figure(size=(7.0, 3.6))
    styles = {"ours": "-", "xgboost": "--"}
    for i, objective in enumerate(("rank:ndcg", "rank:pairwise")):
        for who in ("ours", "xgboost"):
            c = curves[who, objective]
            ax.plot(np.arange(1, len(c) + 1), c, color=PALETTE[i], ls=styles[who], lw=1.5,
                    label=f"{who}, {RANK_LABELS[objective]}")
    ax.axhline(oracle, color="0.3", lw=1, ls=":", label="ranking by the true score")
    ax.set(xlabel="round", ylabel="validation NDCG@10",
           title=f"{cfg.rank_queries} training queries of {cfg.rank_docs} documents")
    ax.legend(fontsize=9, loc="lower right", ncol=2)
    fig.tight_layout()
    run.save_figure(fig, "ranking")


#: The ranking objectives in words.
RANK_LABELS = {"rank:ndcg": "LambdaMART", "rank:pairwise": "pairwise (RankNet)"}


def objective_data(name: str, n: int, seed: int):
    """``X`` (n, 6) and a target for objective ``name``: counts (Poisson), positive amounts
    (Gamma), zero-inflated amounts (Tweedie), heavy-tailed noise (pseudo-Huber, absolute,
    quantile)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    f = 0.6 * X[:, 0] - 0.4 * X[:, 1] + 0.3 * np.sin(3 * X[:, 2])
    if name == "count:poisson":
        return X, rng.poisson(np.exp(f)).astype(np.float64)
    if name == "reg:gamma":
        return X, rng.gamma(2.0, np.exp(f) / 2.0)
    if name == "reg:tweedie":
        return X, rng.poisson(np.exp(f) / 2) * rng.gamma(2.0, 1.0, size=n)
    return X, 3 * f + rng.standard_t(2.0, size=n)


#: Objective -> (metric of both libraries on the test rows, metric tag).
OBJECTIVES = {"count:poisson": "poisson-nloglik", "reg:gamma": "gamma-nloglik",
              "reg:tweedie": "tweedie-nloglik@1.5", "reg:pseudohubererror": "mphe",
              "reg:absoluteerror": "mae", "reg:quantileerror": "quantile"}


def objectives_section(run, cfg) -> None:
    """Each new objective on its generated target: test loss (the objective's metric) and fit
    seconds of ours and xgboost (hist, same parameters, default base scores)."""
    import xgboost as xgb

    from deepnotes.boosting.metrics import resolve

    for name in run.track(list(OBJECTIVES), "objectives"):
        X, y = objective_data(name, cfg.obj_rows, cfg.seed)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=cfg.seed)
        params = shared_params(cfg, n_estimators=cfg.obj_rounds, objective=name)
        del params["gamma"]
        if name == "reg:quantileerror":
            params["quantile_alpha"] = 0.9
        metric = resolve(OBJECTIVES[name], alpha=0.9)
        tag = name.split(":")[1]
        for who in ("ours", "xgboost"):
            model = GBDTRegressor(**params) if who == "ours" else xgb.XGBRegressor(**params)
            t0 = time.perf_counter()
            model.fit(Xtr, ytr)
            secs = time.perf_counter() - t0
            loss = metric(yte, model.predict(Xte))
            run.log_metrics({f"objectives/{tag}_{who}_test_loss": loss,
                             f"objectives/{tag}_{who}_fit_s": secs})
            run.log(f"{name} {who}: test {OBJECTIVES[name]} {loss:.4f}, fit {secs:.2f} s")
