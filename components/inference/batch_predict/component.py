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
        predictions: The input rows plus ``score``, ``prediction``, ``model_version`` and
            ``refused`` (why a row was not scored, "" when it was): rows the model server
            would refuse are refused here too, row by row, and the rest are scored.
        output_uri: Also publish the predictions under this prefix (``s3://`` or local), as
            ``<output_uri>/model=<name>/version=<v>/predictions-<time>.parquet``; empty to skip.

    Returns:
        Where the predictions were published ("" when ``output_uri`` is empty).
    """
    import tempfile
    import time
    from pathlib import Path

    from closedloop.components._runtime import read_frame, write_frame

    from closedloop.ml.batch import REFUSED_COLUMN, predictions_frame, score_batch
    from closedloop.registry import Registry
    from closedloop.serving.loading import fetch_version
    from closedloop.storage import Store, join_uri

    store = Store()
    frame = read_frame(dataset.path)
    with tempfile.TemporaryDirectory() as tmp:
        local = fetch_version(Registry(store, registry_uri), model_name, version, tmp)
    schema, pipeline = local.schema, local.pipeline
    # The server's own row check: a row it would refuse is kept out, with its reason.
    scored = score_batch(frame, pipeline, schema)
    out = predictions_frame(frame, scored, schema, local.version)
    for error in scored.refused[:20]:
        print(f"not scored: {error.describe()}")
    if len(scored.refused) > 20:
        print(
            f"not scored: ... and {len(scored.refused) - 20} more rows (column {REFUSED_COLUMN!r})"
        )
    write_frame(out, predictions)
    predictions.metadata["model_version"] = local.version
    predictions.metadata["rows"] = len(out)
    predictions.metadata["scored_rows"] = len(scored.positions)
    predictions.metadata["refused_rows"] = len(scored.refused)
    if not output_uri:
        return ""
    target = join_uri(
        output_uri,
        f"model={model_name}",
        f"version={local.version}",
        f"predictions-{time.strftime('%Y%m%dT%H%M%S')}.parquet",
    )
    store.publish(target, path=str(Path(predictions.path)))
    print(
        f"published {len(scored.positions)} predictions ({len(scored.refused)} rows refused) "
        f"of {model_name} {local.version} to {target}"
    )
    return target
