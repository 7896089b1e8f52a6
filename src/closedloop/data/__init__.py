"""Synthetic data for demos and tests, and public time-ordered streams for backtests."""

from closedloop.data.generate import DEFAULT_TARGET, generate_transactions
from closedloop.data.public import PUBLIC_DATASETS, PublicDatasetError, load_rainfall
from closedloop.data.scenarios import SCENARIOS, describe_scenario, scenario_stream

__all__ = [
    "DEFAULT_TARGET",
    "PUBLIC_DATASETS",
    "SCENARIOS",
    "PublicDatasetError",
    "describe_scenario",
    "generate_transactions",
    "load_rainfall",
    "scenario_stream",
]
