"""A Seldon user model that returns its input: the cost of the wrapper alone."""

from __future__ import annotations

from typing import Any


class EchoModel:
    """Answer every prediction request with the rows it was sent."""

    def predict(self, X: Any, features_names: Any = None, **kwargs: Any) -> Any:
        return X
