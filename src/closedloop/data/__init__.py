"""Synthetic data for demos and tests."""

from closedloop.data.generate import DEFAULT_TARGET, generate_transactions

__all__ = ["DEFAULT_TARGET", "generate_transactions"]
