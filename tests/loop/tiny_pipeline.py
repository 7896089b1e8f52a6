"""A tiny real KFP pipeline standing in for the retraining pipeline in the trigger tests.

The trigger subprocess imports it as ``tiny_pipeline:retrain`` (``tests/loop`` is on its
``PYTHONPATH``); the KFP test compiles it to YAML. Each run leaves one marker file, so a
test can count the runs that really executed.
"""

from kfp import dsl


@dsl.component(base_image="python:3.12-slim", install_kfp_package=False)
def leave_marker(marker_dir: str, model_name: str, alarm_id: str) -> str:
    """Write one file named after the model and the alarm that started the run."""
    import pathlib
    import uuid

    path = pathlib.Path(marker_dir) / f"{model_name}-{alarm_id}-{uuid.uuid4().hex}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("retrained\n")
    return str(path)


@dsl.pipeline(name="tiny-retraining")
def retrain(
    marker_dir: str,
    model_name: str,
    alarm_id: str = "none",
    reference_uri: str = "",
    drift_started_at: float = 0.0,
) -> None:
    """Leave a marker: the run happened (the last two parameters mirror the real pipeline's)."""
    leave_marker(marker_dir=marker_dir, model_name=model_name, alarm_id=alarm_id)
