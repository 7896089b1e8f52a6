"""Pipelines by name: the CLI, the compiler, the trigger and the tests iterate this one map."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from closedloop.errors import ClosedLoopError


class UnknownPipelineError(ClosedLoopError, KeyError):
    """No pipeline is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def pipelines() -> dict[str, Callable[..., Any]]:
    """Return every registered pipeline by name (imported on first call: kfp is heavy)."""
    from closedloop.pipelines.ablation import feature_ablation_pipeline
    from closedloop.pipelines.batch_inference import batch_inference_pipeline
    from closedloop.pipelines.retraining import retraining_pipeline
    from closedloop.pipelines.training import training_pipeline

    return {
        "training": training_pipeline,
        "retraining": retraining_pipeline,
        "feature-ablation": feature_ablation_pipeline,
        "batch-inference": batch_inference_pipeline,
    }


# Other names people use for a pipeline (not compiled twice).
ALIASES = {"inference": "batch-inference"}


def get(name: str) -> Callable[..., Any]:
    """Return the pipeline registered as *name* (or one of its :data:`ALIASES`).

    Raises:
        UnknownPipelineError: With the list of known names.
    """
    known = pipelines()
    name = ALIASES.get(name, name)
    if name not in known:
        raise UnknownPipelineError(
            f"unknown pipeline {name!r}: choose one of {', '.join(sorted(known))}"
        )
    return known[name]
