"""The root of closedloop's exception tree.

Every error a user can cause or fix (bad data, a store that is down, a port in use)
derives from :class:`ClosedLoopError` and carries a one-line message saying what went
wrong and how to fix it; the CLI prints exactly that line. Anything else is a bug.
"""


class ClosedLoopError(Exception):
    """A failure with a message meant for the user."""
