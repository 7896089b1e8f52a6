import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from closedloop.ml.features import TabularFeatures, make_features


@parametrize_with_checks([TabularFeatures(), TabularFeatures(engineer=False)])
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


@pytest.fixture()
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "score": rng.normal(0, 1, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "when": pd.Timestamp("2026-03-01")
            + pd.to_timedelta(rng.integers(0, 86_400 * 60, n), "s"),
        }
    )


def _features(engineer: bool = True) -> TabularFeatures:
    return TabularFeatures(
        numeric_columns=["amount", "score"],
        categorical_columns=["colour"],
        datetime_columns=["when"],
        engineer=engineer,
    )


def test_named_columns_output_layout(frame):
    step = _features().fit(frame)
    out = step.transform(frame)
    names = list(step.get_feature_names_out())
    assert out.dtype == np.float64
    assert out.shape == (len(frame), len(names))
    assert names == [
        "amount",
        "score",
        "amount__log1p",
        "colour__blue",
        "colour__green",
        "colour__red",
        "when__hour",
        "when__dayofweek",
        "when__month",
    ]
    assert step.feature_sources_ == ("amount", "score", "amount", *["colour"] * 3, *["when"] * 3)
    np.testing.assert_allclose(out[:, 2], np.log1p(frame["amount"]))
    np.testing.assert_array_equal(out[:, 6], frame["when"].dt.hour)
    np.testing.assert_array_equal(out[:, 7], frame["when"].dt.dayofweek)
    np.testing.assert_array_equal(out[:, 8], frame["when"].dt.month)
    np.testing.assert_array_equal(out[:, 3:6].sum(axis=1), 1.0)


def test_engineer_false_gives_only_base_encoding(frame):
    names = list(_features(engineer=False).fit(frame).get_feature_names_out())
    assert names == ["amount", "score", "colour__blue", "colour__green", "colour__red"]


def test_unknown_categories_missing_values_and_string_dates(frame):
    step = _features().fit(frame)
    new = frame.head(3).copy()
    new["colour"] = ["purple", None, "red"]
    new.loc[new.index[0], "amount"] = np.nan
    new.loc[new.index[1], "when"] = pd.NaT
    out = step.transform(new)
    assert not np.isnan(out).any()
    one_hot = out[:, 3:6]
    np.testing.assert_array_equal(one_hot[0], 0.0)
    np.testing.assert_array_equal(one_hot[1], 0.0)
    np.testing.assert_array_equal(one_hot[2], [0.0, 0.0, 1.0])
    assert out[0, 0] == pytest.approx(frame["amount"].median())
    as_strings = frame.head(3).assign(when=frame["when"].head(3).dt.strftime("%d/%m/%Y %H:%M:%S"))
    np.testing.assert_array_equal(step.transform(as_strings), step.transform(frame.head(3)))


def test_named_mode_errors(frame):
    with pytest.raises(NotFittedError):
        _features().transform(frame)
    step = _features().fit(frame)
    with pytest.raises(TypeError, match="DataFrame"):
        step.transform(frame.to_numpy())
    with pytest.raises(ValueError):
        step.transform(frame[["score", "amount", "colour", "when"]])
    with pytest.raises(ValueError, match="infinite"):
        step.transform(frame.assign(score=np.inf))


def test_max_categories_groups_rare_values():
    colours = ["a"] * 50 + ["b"] * 30 + ["c"] * 2 + ["d"] * 1
    frame = pd.DataFrame({"colour": colours})
    step = TabularFeatures(categorical_columns=["colour"], max_categories=3).fit(frame)
    names = list(step.get_feature_names_out())
    assert names == ["colour__a", "colour__b", "colour__infrequent"]
    out = step.transform(pd.DataFrame({"colour": ["d", "zzz"]}))
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 0, 1]])


def test_make_features_follows_schema(schema):
    step = make_features(schema)
    assert set(step.numeric_columns) == {"amount", "hour", "account_age_days", "card_present"}
    assert step.categorical_columns == ("channel", "merchant_category", "country")
    assert step.datetime_columns == ("transaction_time",)
    assert step.engineer is True
    assert make_features(schema, engineer=False).engineer is False
