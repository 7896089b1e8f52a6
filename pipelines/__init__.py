"""Pipelines composed from the components, found by name in :mod:`closedloop.pipelines.registry`."""
