"""Assemble retraining data: reference rows plus the recent labelled feedback archive."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def assemble_training_data(
    reference_uri: str,
    archive_uri: str,
    model_name: str,
    registry_uri: str,
    dataset: Output[Dataset],
    recent_hours: float = 24.0,
    drift_started_at: float = 0.0,
    max_reference_rows: int = 20000,
    reference_per_recent: float = 1.0,
    concept_alpha: float = 0.01,
    concept_min_effect: float = 0.25,
    min_recent_rows: int = 500,
    seed: int = 0,
):
    """Combine the recent labelled feedback with as much reference data as the concept allows.

    The feedback archive is written by the drift-detector sidecars: every labelled
    prediction, partitioned by the hour it arrived. The champion is scored on the recent
    rows and on a reference sample: if the map from its output to the outcome no longer
    holds (a changed concept, see ``closedloop.ml.retrain``), every reference row is
    dropped; otherwise a reference sample is kept beside the recent rows. Rows are
    written in time order (reference first, then feedback by arrival), so an
    ``ordered`` split holds out the latest feedback.

    Args:
        reference_uri: The original training data (file or prefix, CSV or Parquet).
        archive_uri: The feedback archive root (``s3://bucket/feedback``).
        model_name: Whose feedback to read and whose champion to test the concept with.
        registry_uri: The model registry holding the champion; without a champion the
            reference sample is kept untested.
        dataset: The combined rows (Parquet); metadata names both sources, the digest and
            the concept decision (``recency``).
        recent_hours: How far back the archive window reaches (when ``drift_started_at`` is 0).
        drift_started_at: Unix time the drift began (the trigger passes the opening of the
            first drifted window): only rows from then on are used, so the new model
            learns the current concept. 0 to use ``recent_hours`` instead.
        max_reference_rows: At most this many reference rows are kept (0: none).
        reference_per_recent: At most this many reference rows per recent row.
        concept_alpha: Significance level of the concept test.
        concept_min_effect: Smallest effect (excess loss share) that counts as a changed
            concept.
        min_recent_rows: Fail when the window holds fewer labelled rows than this.
        seed: Sampling seed for the reference rows.
    """
    import hashlib
    import io
    import json
    import tempfile
    from datetime import UTC, datetime, timedelta

    from closedloop.components._runtime import write_frame

    from closedloop.drift.sidecar.archive import read_archive
    from closedloop.ml.ingest import ingest
    from closedloop.ml.retrain import assemble_retraining_rows
    from closedloop.registry import Registry
    from closedloop.serving.loading import fetch_version
    from closedloop.storage import Store

    store = Store()
    reference = ingest(reference_uri, store=store)
    if drift_started_at > 0:
        since = datetime.fromtimestamp(drift_started_at, UTC)
    else:
        since = datetime.now(UTC) - timedelta(hours=recent_hours)
    recent = read_archive(store, archive_uri, model_name, since=since)
    if len(recent) < min_recent_rows:
        raise ValueError(
            f"the feedback archive {archive_uri} holds {len(recent)} labelled rows for {model_name} "
            f"since {since:%Y-%m-%d %H:%M:%S} UTC; at least {min_recent_rows} are needed to retrain"
        )
    registry = Registry(store, registry_uri)
    pointer = registry.champion(model_name)
    champion = champion_schema = None
    if pointer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            files = fetch_version(registry, model_name, pointer.version, tmp)
        champion_schema, champion = files.schema, files.pipeline
    try:
        combined, decision = assemble_retraining_rows(
            reference.frame,
            recent,
            champion_schema,
            champion,
            max_reference_rows=max_reference_rows,
            seed=seed,
            reference_per_recent=reference_per_recent,
            alpha=concept_alpha,
            min_effect=concept_min_effect,
        )
    except ValueError as exc:
        raise ValueError(f"cannot assemble {reference_uri} + {archive_uri}: {exc}") from exc
    buffer = io.BytesIO()
    combined.to_parquet(buffer, index=False)
    write_frame(combined, dataset)
    dataset.metadata["source"] = (
        f"{reference_uri} + {archive_uri} (model={model_name}, last {recent_hours:g} h)"
    )
    dataset.metadata["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    dataset.metadata["reference_rows"] = decision.reference_rows_kept
    dataset.metadata["recent_rows"] = decision.recent_rows
    dataset.metadata["champion_version"] = pointer.version if pointer else ""
    dataset.metadata["recency"] = decision.to_dict()
    print(
        f"assembled {decision.reference_rows_kept} reference + {decision.recent_rows} recent rows"
    )
    print(f"recency decision: {json.dumps(decision.to_dict(), sort_keys=True)}")
    print(decision.reason)
