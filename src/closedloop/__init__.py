"""closedloop: KFP components, Seldon serving and drift-triggered retraining for tabular models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("closedloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
