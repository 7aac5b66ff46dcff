"""scikit-learn's estimator checks on GBDTRegressor / GBDTClassifier (small settings for speed)."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepnotes.boosting import GBDTClassifier, GBDTRegressor

# No check is skipped. n_estimators / max_depth are only reduced to keep the ~100 fits fast.
ESTIMATORS = [GBDTRegressor(n_estimators=10, max_depth=3),
              GBDTClassifier(n_estimators=10, max_depth=3)]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_get_set_params_round_trip():
    est = GBDTClassifier(reg_lambda=2.0)
    assert est.get_params()["reg_lambda"] == 2.0
    assert est.set_params(max_depth=3, gamma=0.5).get_params()["gamma"] == 0.5
    with pytest.raises(ValueError):
        est.set_params(no_such_param=1)
