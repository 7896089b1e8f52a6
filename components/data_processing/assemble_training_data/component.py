"""Assemble retraining data: reference rows plus the recent labelled feedback archive."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def assemble_training_data(
    reference_uri: str,
    archive_uri: str,
    model_name: str,
    dataset: Output[Dataset],
    recent_hours: float = 24.0,
    drift_started_at: float = 0.0,
    max_reference_rows: int = 20000,
    min_recent_rows: int = 500,
    seed: int = 0,
):
    """Combine a sample of the reference data with the labelled rows that arrived recently.

    The feedback archive is written by the drift-detector sidecars: every labelled
    prediction, partitioned by the hour it arrived. Recent rows carry the current
    concept; the reference sample keeps rare cases the recent window may lack.

    Args:
        reference_uri: The original training data (file or prefix, CSV or Parquet).
        archive_uri: The feedback archive root (``s3://bucket/feedback``).
        model_name: Whose feedback to read.
        dataset: The combined rows (Parquet); metadata names both sources and the digest.
        recent_hours: How far back the archive window reaches (when ``drift_started_at`` is 0).
        drift_started_at: Unix time the drift began (the trigger passes the opening of the
            first drifted window): only rows from then on are used, so the new model
            learns the current concept. 0 to use ``recent_hours`` instead.
        max_reference_rows: At most this many reference rows are kept (0: none).
        min_recent_rows: Fail when the window holds fewer labelled rows than this.
        seed: Sampling seed for the reference rows.
    """
    import hashlib
    import io
    from datetime import UTC, datetime, timedelta

    import pandas as pd
    from closedloop.components._runtime import write_frame

    from closedloop.drift.sidecar.archive import read_archive
    from closedloop.ml.ingest import ingest
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
    columns = list(reference.frame.columns)
    missing = [c for c in columns if c not in recent.columns]
    if missing:
        raise ValueError(
            f"feedback rows in {archive_uri} lack columns {missing} of the reference data"
        )
    sample = reference.frame
    if len(sample) > max_reference_rows:
        sample = sample.sample(n=max_reference_rows, random_state=seed)
    combined = pd.concat([sample, recent[columns]], ignore_index=True)
    buffer = io.BytesIO()
    combined.to_parquet(buffer, index=False)
    write_frame(combined, dataset)
    dataset.metadata["source"] = (
        f"{reference_uri} + {archive_uri} (model={model_name}, last {recent_hours:g} h)"
    )
    dataset.metadata["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    dataset.metadata["reference_rows"] = len(sample)
    dataset.metadata["recent_rows"] = len(recent)
    print(f"assembled {len(sample)} reference + {len(recent)} recent labelled rows")
