"""Score a batch with a registered model version and write the predictions."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def batch_predict(
    dataset: Input[Dataset],
    registry_uri: str,
    model_name: str,
    version: str,
    predictions: Output[Dataset],
    output_uri: str = "",
) -> str:
    """Predict with the version's fitted pipeline (digest-checked) and stamp every row.

    Args:
        dataset: Rows to score.
        registry_uri: The model registry.
        model_name: Registered model name.
        version: The version id (resolved by ``validate_batch``).
        predictions: The input rows plus ``score``, ``prediction`` and ``model_version``.
        output_uri: Also publish the predictions under this prefix (``s3://`` or local), as
            ``<output_uri>/model=<name>/version=<v>/predictions-<time>.parquet``; empty to skip.

    Returns:
        Where the predictions were published ("" when ``output_uri`` is empty).
    """
    import tempfile
    import time
    from pathlib import Path

    import joblib
    import numpy as np
    from closedloop.components._runtime import read_frame, write_frame

    from closedloop.ml.schema import InputSchema, check_frame
    from closedloop.ml.train import predict_scores
    from closedloop.registry import Registry
    from closedloop.registry.layout import MODEL_FILE, SCHEMA_FILE
    from closedloop.storage import Store, join_uri

    store = Store()
    frame = read_frame(dataset.path)
    with tempfile.TemporaryDirectory() as tmp:
        local = Registry(store, registry_uri).fetch(model_name, version, tmp)
        schema = InputSchema.from_json((local.path / SCHEMA_FILE).read_text())
        pipeline = joblib.load(local.path / MODEL_FILE)
    checked = check_frame(frame[list(schema.feature_names)], schema).frame
    scores = predict_scores(pipeline, checked, schema)
    out = frame.copy()
    if schema.task == "classification" and scores.ndim == 1:
        out["score"] = scores
        classes = list(schema.classes or (0, 1))
        out["prediction"] = [classes[int(s >= 0.5)] for s in scores]
    elif schema.task == "classification":
        out["prediction"] = [list(schema.classes or ())[i] for i in np.argmax(scores, axis=1)]
        out["score"] = scores.max(axis=1)
    else:
        out["prediction"] = scores
    out["model_version"] = local.version
    write_frame(out, predictions)
    predictions.metadata["model_version"] = local.version
    if not output_uri:
        return ""
    target = join_uri(
        output_uri,
        f"model={model_name}",
        f"version={local.version}",
        f"predictions-{time.strftime('%Y%m%dT%H%M%S')}.parquet",
    )
    store.publish(target, path=str(Path(predictions.path)))
    print(f"published {len(out)} predictions of {model_name} {local.version} to {target}")
    return target
