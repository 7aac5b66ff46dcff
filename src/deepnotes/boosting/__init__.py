"""Gradient-boosted trees (XGBoost's algorithm) and ensembles.

Modules, one per concept (as scikit-learn's histogram GBDT): ``binning`` (quantile bins, NaN bin),
``histogram`` (gradient histograms, subtraction), ``splitting`` (second-order gain, leaf weights,
sparsity-aware split search), ``grower`` (depth-wise / loss-guided growth, row partitioning),
``exact`` (exact greedy on presorted columns), ``predictor`` (flat trees, numba prediction),
``objectives``, ``metrics``, ``model_io`` (JSON format), ``shap`` (TreeSHAP contributions and
interaction values), and the estimators in ``gbdt``;
``dask`` fits the same trees on a Dask cluster (``DaskGBDTClassifier`` / ``DaskGBDTRegressor``;
imported from there, so dask stays optional).
Ensembles: ``cart`` (CART trees on the same bins, Gini / squared error), ``forest`` (decision
trees, random forests with out-of-bag scores), ``ensemble`` (bagging, AdaBoost SAMME) and
``stacking`` (out-of-fold meta-features).

Algorithm modules here are pure: no printing, plotting or CLI (``save_model`` / ``load_model``
write and read the model file the caller names).
"""

from deepnotes.boosting.binning import BinMapper
from deepnotes.boosting.ensemble import AdaBoostClassifier, BaggingClassifier, BaggingRegressor
from deepnotes.boosting.forest import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from deepnotes.boosting.gbdt import GBDTClassifier, GBDTRegressor
from deepnotes.boosting.metrics import auc, error, logloss, mlogloss, rmse
from deepnotes.boosting.predictor import Forest, Tree
from deepnotes.boosting.stacking import StackingClassifier, StackingRegressor


def load_model(path):
    """Load a model saved by ``save_model`` into a new estimator of the saved class."""
    import json
    from pathlib import Path

    from deepnotes.boosting.model_io import _corrupt

    try:
        name = json.loads(Path(path).read_text(encoding="utf-8")).get("estimator")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise _corrupt(path, f"not a JSON object ({exc})") from None
    classes = {"GBDTClassifier": GBDTClassifier, "GBDTRegressor": GBDTRegressor}
    if name not in classes:
        raise _corrupt(path, f"unknown estimator {name!r}")
    return classes[name]().load_model(path)


__all__ = ["AdaBoostClassifier", "BaggingClassifier", "BaggingRegressor", "BinMapper",
           "DecisionTreeClassifier", "DecisionTreeRegressor", "Forest", "GBDTClassifier",
           "GBDTRegressor", "RandomForestClassifier", "RandomForestRegressor",
           "StackingClassifier", "StackingRegressor", "Tree", "auc", "error", "load_model",
           "logloss", "mlogloss", "rmse"]
