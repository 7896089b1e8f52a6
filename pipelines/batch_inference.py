"""Batch inference: score a new batch with a registered version, then check it for drift."""

from typing import NamedTuple

from closedloop.components.data_processing.ingest_data.component import ingest_data
from closedloop.components.inference.batch_predict.component import batch_predict
from closedloop.components.inference.check_drift.component import check_drift
from closedloop.components.inference.validate_batch.component import validate_batch
from closedloop.pipelines._cluster import network_bound, uncached
from kfp import dsl
from kfp.dsl import Dataset


class BatchInferenceOutputs(NamedTuple):
    """What a batch-inference run hands back (``closedloop run inference`` prints it).

    Attributes:
        predictions: The scored rows; its metadata holds ``model_version``, ``rows``,
            ``scored_rows`` and ``refused_rows``.
        predictions_uri: Where they were published ("" when ``output_uri`` is empty).
    """

    predictions: Dataset
    predictions_uri: str


@dsl.pipeline(
    name="closedloop-batch-inference",
    description="Ingest a batch, validate it against the model version's schema, predict, write "
    "version-stamped predictions, and check the batch for drift with the version's detector.",
)
def batch_inference_pipeline(
    data_uri: str,
    model_name: str = "fraud",
    registry_uri: str = "s3://closedloop/registry",
    version: str = "champion",
    output_uri: str = "s3://closedloop/predictions",
) -> BatchInferenceOutputs:
    """Score a batch with one model version.

    Args:
        data_uri: The batch: ``s3://`` file or prefix, CSV or Parquet.
        model_name: Registered model name.
        registry_uri: The model registry.
        version: A version id or ``champion`` (resolved once, at validation).
        output_uri: Where predictions are published.

    Returns:
        The predictions (rows scored and refused in their metadata) and where they
        were published.
    """
    raw = uncached(network_bound(ingest_data(source_uri=data_uri)))
    # "champion" resolves to the champion now: uncached.
    checked = uncached(
        network_bound(
            validate_batch(
                dataset=raw.outputs["dataset"],
                registry_uri=registry_uri,
                model_name=model_name,
                version=version,
            )
        )
    )
    resolved = checked.outputs["version"]
    scored = network_bound(
        batch_predict(
            dataset=raw.outputs["dataset"],
            registry_uri=registry_uri,
            model_name=model_name,
            version=resolved,
            output_uri=output_uri,
        )
    )
    uncached(scored)  # publishes a new predictions file on every run
    # Judged with the policy of now: uncached.
    uncached(
        network_bound(
            check_drift(
                dataset=raw.outputs["dataset"],
                registry_uri=registry_uri,
                model_name=model_name,
                version=resolved,
            )
        )
    )
    return BatchInferenceOutputs(scored.outputs["predictions"], scored.outputs["Output"])
