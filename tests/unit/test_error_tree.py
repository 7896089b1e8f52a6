"""Every error a user can cause derives from ClosedLoopError (the root's contract)."""

from __future__ import annotations

import pytest

from closedloop.errors import ClosedLoopError
from closedloop.ml.schema import SchemaError
from closedloop.serving.messages import MessageError, TooManyRows


@pytest.mark.parametrize("error", [SchemaError, MessageError, TooManyRows])
def test_input_errors_are_closedloop_errors_and_value_errors(error: type[Exception]) -> None:
    # ValueError too: callers (and the sidecar) that catch ValueError keep working.
    assert issubclass(error, ClosedLoopError) and issubclass(error, ValueError)
