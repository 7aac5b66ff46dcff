"""Gradient-boosted trees (XGBoost's algorithm) and ensembles.

Modules, one per concept (as scikit-learn's histogram GBDT): ``binning`` (quantile bins, NaN bin),
``histogram`` (gradient histograms, subtraction), ``splitting`` (second-order gain, leaf weights,
sparsity-aware split search), ``grower`` (depth-wise / loss-guided growth, row partitioning),
``exact`` (exact greedy on presorted columns), ``predictor`` (flat trees, numba prediction),
``objectives`` (squared/logistic/softmax, Poisson, Gamma, Tweedie, pseudo-Huber, absolute,
quantile), ``ranking`` (LambdaMART ``rank:ndcg`` / ``rank:pairwise``, ``GBDTRanker``, NDCG@k),
``metrics``, ``model_io`` (JSON and UBJSON), ``shap`` (TreeSHAP contributions and interaction
values), and the estimators in ``gbdt`` (monotone and interaction constraints, native categorical
splits, early stopping and callbacks);
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
from deepnotes.boosting.ranking import GBDTRanker
from deepnotes.boosting.stacking import StackingClassifier, StackingRegressor


def load_model(path):
    """Load a model saved by ``save_model`` (JSON or UBJSON) into a new estimator of the saved
    class (``GBDTClassifier``, ``GBDTRegressor`` or ``GBDTRanker``)."""
    from deepnotes.boosting.model_io import load

    return load(path)


__all__ = ["AdaBoostClassifier", "BaggingClassifier", "BaggingRegressor", "BinMapper",
           "DecisionTreeClassifier", "DecisionTreeRegressor", "Forest", "GBDTClassifier",
           "GBDTRanker", "GBDTRegressor", "RandomForestClassifier", "RandomForestRegressor",
           "StackingClassifier", "StackingRegressor", "Tree", "auc", "error", "load_model",
           "logloss", "mlogloss", "rmse"]
