"""Drift detection: the fitted detector (``closedloop.drift.detector``) and its sidecar.

Nothing is imported here; alibi-detect loads only when a detector is fitted or loaded.
"""
