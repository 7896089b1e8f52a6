"""The retraining pipeline: recent labelled feedback (+ reference data if the concept held), same steps as training."""

from closedloop.components.data_processing.assemble_training_data.component import (
    assemble_training_data,
)
from closedloop.pipelines._cluster import network_bound, uncached
from closedloop.pipelines.training import train_gate_register
from kfp import dsl


@dsl.pipeline(
    name="closedloop-retraining",
    description="Started by the retrain trigger on drift: assemble the recent labelled rows (plus "
    "reference rows unless the champion shows the concept changed) in time order, validate "
    "against the champion's schema, clean, hold out the latest rows, tune, evaluate, gate "
    "against the champion, register and promote.",
)
def retraining_pipeline(
    reference_uri: str,
    archive_uri: str = "s3://closedloop/feedback",
    model_name: str = "fraud",
    registry_uri: str = "s3://closedloop/registry",
    target: str = "is_fraud",
    recent_hours: float = 24.0,
    drift_started_at: float = 0.0,
    max_reference_rows: int = 20000,
    reference_per_recent: float = 1.0,
    min_recent_rows: int = 500,
    n_candidates: int = 3,
    model_kinds: str = "xgboost,random_forest,logistic_regression",
    test_size: float = 0.2,
    engineer: bool = True,
    primary_metric: str = "roc_auc",
    min_primary_metric: float = 0.7,
    min_improvement: float = 0.0,
    seed: int = 0,
    deploy_backend: str = "kubernetes",
    deploy_endpoint: str = "",
):
    """Retrain on fresh labelled data and promote only through the gate.

    The recipe is ``closedloop.ml.retrain``'s: reference rows are kept only when the
    champion's scores show the concept held (then at most ``reference_per_recent`` per
    recent row); rows are in time order and the latest ``test_size`` share is the
    holdout, which neither model was trained on; the data is validated against the
    champion's schema as a contract. The new version's drift detector is fitted on its
    own training rows, so the sidecars re-baseline when it is promoted.

    Args:
        reference_uri: The original training data.
        archive_uri: The sidecars' feedback archive root.
        model_name: Registered model name.
        registry_uri: The model registry.
        target: The label column.
        recent_hours: Archive window length (when ``drift_started_at`` is 0).
        drift_started_at: Unix time the drift began; the trigger passes it. 0: use ``recent_hours``.
        max_reference_rows: Most reference rows kept beside the recent ones.
        reference_per_recent: Most reference rows kept per recent row.
        min_recent_rows: Fewest recent labelled rows to retrain on.
        n_candidates: Candidate configurations trained in parallel.
        model_kinds: Comma-separated model kinds to search over.
        test_size: Share of rows, the latest, held out for evaluation and the gate.
        engineer: Add engineered features.
        primary_metric: The gate's metric.
        min_primary_metric: The gate's absolute threshold.
        min_improvement: Improvement over the champion required.
        seed: Seed of every random choice.
        deploy_backend: After a passed gate: ``local``, ``kubernetes`` or ``none``.
        deploy_endpoint: Local backend: a model server URL to verify the swap on.
    """
    assembled = network_bound(
        assemble_training_data(
            reference_uri=reference_uri,
            archive_uri=archive_uri,
            model_name=model_name,
            registry_uri=registry_uri,
            recent_hours=recent_hours,
            drift_started_at=drift_started_at,
            max_reference_rows=max_reference_rows,
            reference_per_recent=reference_per_recent,
            min_recent_rows=min_recent_rows,
            seed=seed,
        )
    )
    # It reads mutable state (the archive, the champion pointer): never reuse a cached run.
    uncached(assembled)
    train_gate_register(
        assembled.outputs["dataset"],
        target=target,
        model_name=model_name,
        registry_uri=registry_uri,
        # Not a schema inferred from the data being checked: the champion's, as a contract.
        schema_uri="champion",
        n_candidates=n_candidates,
        model_kinds=model_kinds,
        split_strategy="ordered",
        time_column="",
        test_size=test_size,
        engineer=engineer,
        max_missing_rate=0.2,
        max_duplicate_rate=0.05,
        primary_metric=primary_metric,
        min_primary_metric=min_primary_metric,
        min_improvement=min_improvement,
        seed=seed,
        deploy_backend=deploy_backend,
        deploy_endpoint=deploy_endpoint,
    )
