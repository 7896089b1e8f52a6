"""The training pipeline: raw data to a gated, registered, explained model."""

from closedloop.components.data_processing.clean_data.component import clean_data
from closedloop.components.data_processing.engineer_features.component import engineer_features
from closedloop.components.data_processing.ingest_data.component import ingest_data
from closedloop.components.data_processing.split_data.component import split_data
from closedloop.components.data_processing.validate_data.component import validate_data
from closedloop.components.deployment.deploy_model.component import deploy_model
from closedloop.components.deployment.promote_model.component import promote_model
from closedloop.components.deployment.register_model.component import register_model
from closedloop.components.evaluation.evaluate_model.component import evaluate_model
from closedloop.components.evaluation.explain_model.component import explain_model
from closedloop.components.evaluation.gate_model.component import gate_model
from closedloop.components.training.fit_drift_detector.component import fit_drift_detector
from closedloop.components.training.propose_candidates.component import propose_candidates
from closedloop.components.training.select_best_candidate.component import select_best_candidate
from closedloop.components.training.train_candidate.component import train_candidate
from closedloop.components.training.train_model.component import train_model
from closedloop.pipelines._cluster import network_bound, side_effect, uncached, with_s3
from kfp import dsl
from kfp.dsl.pipeline_channel import PipelineChannel


def train_gate_register(
    dataset: PipelineChannel,
    *,
    target: str,
    model_name: str,
    registry_uri: str,
    schema_uri: str,
    n_candidates: int,
    model_kinds: str,
    split_strategy: str,
    time_column: str,
    test_size: float,
    engineer: bool,
    max_missing_rate: float,
    max_duplicate_rate: float,
    primary_metric: str,
    min_primary_metric: float,
    min_improvement: float,
    seed: int,
    deploy_backend: str,
    deploy_endpoint: str,
) -> dsl.PipelineTask:
    """Add every step after ingestion to the pipeline being defined; return the promote task.

    The training and the retraining pipelines share this, so a retrained model goes
    through exactly the same validation, cleaning, features, tuning, evaluation,
    gate and registration as the first one.
    """
    # S3 access (schema_uri) but no retry: a data problem fails the same way every time.
    # Uncached: "champion" resolves to whichever version is the champion now.
    checked = uncached(
        with_s3(
            validate_data(
                dataset=dataset,
                target=target,
                schema_uri=schema_uri,
                registry_uri=registry_uri,
                model_name=model_name,
                max_missing_rate=max_missing_rate,
                max_duplicate_rate=max_duplicate_rate,
            )
        )
    )
    cleaned = clean_data(dataset=dataset, schema=checked.outputs["schema"])
    split = split_data(
        dataset=cleaned.outputs["cleaned"],
        target=target,
        strategy=split_strategy,
        test_size=test_size,
        time_column=time_column,
        seed=seed,
    )
    # The served schema: validation's, carrying the cleaning fitted on these rows.
    schema = cleaned.outputs["fitted_schema"]
    features = engineer_features(train=split.outputs["train"], schema=schema, engineer=engineer)
    proposals = propose_candidates(n_candidates=n_candidates, seed=seed, kinds=model_kinds)
    with dsl.ParallelFor(proposals.output) as config:
        candidate = train_candidate(
            train=split.outputs["train"],
            schema=schema,
            features=features.outputs["features"],
            config=config,
            seed=seed,
        )
    best = select_best_candidate(results=dsl.Collected(candidate.output))
    trained = train_model(
        train=split.outputs["train"],
        schema=schema,
        features=features.outputs["features"],
        config=best.outputs["Output"],
    )
    model = trained.outputs["model"]
    evaluated = evaluate_model(model=model, holdout=split.outputs["holdout"], schema=schema)
    explained = explain_model(
        model=model, holdout=split.outputs["holdout"], schema=schema, seed=seed
    )
    detector = fit_drift_detector(train=split.outputs["train"], schema=schema, seed=seed)
    # Uncached: the gate compares against the live champion.
    gated = uncached(
        network_bound(
            gate_model(
                model=model,
                holdout=split.outputs["holdout"],
                schema=schema,
                registry_uri=registry_uri,
                model_name=model_name,
                primary_metric=primary_metric,
                min_primary_metric=min_primary_metric,
                min_improvement=min_improvement,
                seed=seed,
            )
        )
    )
    registered = side_effect(
        register_model(
            model=model,
            schema=schema,
            detector=detector.outputs["detector"],
            reference=detector.outputs["reference"],
            evaluation=evaluated.outputs["evaluation"],
            explanation=explained.outputs["explanation"],
            dataset=dataset,
            gate=gated.outputs["decision"],
            registry_uri=registry_uri,
            model_name=model_name,
            config=best.outputs["Output"],
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            seed=seed,
            engineer=engineer,
        )
    )
    with dsl.If(gated.outputs["Output"] == "promote", name="gate-passed"):
        # Locally the pointer moves first (local servers follow it); on Kubernetes the
        # promote step only checks the gate and the deploy step moves the pointer once
        # the rollout serves the version (closedloop.deploy.promotion).
        promoted = side_effect(
            promote_model(
                registry_uri=registry_uri,
                model_name=model_name,
                version=registered.output,
                gate=gated.outputs["decision"],
                backend=deploy_backend,
            )
        )
        deployed = side_effect(
            deploy_model(
                model_name=model_name,
                version=registered.output,
                backend=deploy_backend,
                registry_uri=registry_uri,
                endpoint=deploy_endpoint,
                gate=gated.outputs["decision"],
            )
        )
        # One retry for a lost API call; a failed rollout is not repeated (the
        # deployer refuses a version that already failed here).
        deployed.set_retry(num_retries=1, backoff_duration="30s")
        deployed.after(promoted)
    return promoted


@dsl.pipeline(
    name="closedloop-training",
    description="Ingest, validate, clean, split, engineer features, tune N candidates in parallel, "
    "evaluate, explain, fit a drift detector, gate against the champion, register, promote.",
)
def training_pipeline(
    data_uri: str,
    target: str = "is_fraud",
    model_name: str = "fraud",
    registry_uri: str = "s3://closedloop/registry",
    schema_uri: str = "",
    n_candidates: int = 4,
    model_kinds: str = "xgboost,random_forest,logistic_regression",
    split_strategy: str = "stratified",
    time_column: str = "",
    test_size: float = 0.2,
    engineer: bool = True,
    max_missing_rate: float = 0.2,
    max_duplicate_rate: float = 0.05,
    primary_metric: str = "roc_auc",
    min_primary_metric: float = 0.7,
    min_improvement: float = 0.0,
    seed: int = 0,
    deploy_backend: str = "kubernetes",
    deploy_endpoint: str = "",
):
    """Train, gate and register a tabular model.

    Args:
        data_uri: Raw data: ``s3://`` file or prefix of partitions, CSV or Parquet.
        target: The label column.
        model_name: Registered model name.
        registry_uri: The model registry (``s3://bucket/prefix``).
        schema_uri: A schema to validate against as a contract: a schema JSON URI,
            ``champion`` for the registered champion's, or empty to infer one from the data.
        n_candidates: Candidate configurations trained in parallel.
        model_kinds: Comma-separated model kinds to search over.
        split_strategy: ``stratified``, ``time`` or ``ordered`` (the last rows held out).
        time_column: The ordering column for a time split.
        test_size: Share of rows held out for evaluation and the gate.
        engineer: Add engineered features.
        max_missing_rate: Validation: highest missing share in any column.
        max_duplicate_rate: Validation: highest duplicate-row share.
        primary_metric: The gate's metric.
        min_primary_metric: The gate's absolute threshold.
        min_improvement: Improvement over the champion required.
        seed: Seed of every random choice.
        deploy_backend: After a passed gate: ``local``, ``kubernetes`` or ``none``.
        deploy_endpoint: Local backend: a model server URL to verify the swap on.
    """
    raw = uncached(network_bound(ingest_data(source_uri=data_uri)))
    train_gate_register(
        raw.outputs["dataset"],
        target=target,
        model_name=model_name,
        registry_uri=registry_uri,
        schema_uri=schema_uri,
        n_candidates=n_candidates,
        model_kinds=model_kinds,
        split_strategy=split_strategy,
        time_column=time_column,
        test_size=test_size,
        engineer=engineer,
        max_missing_rate=max_missing_rate,
        max_duplicate_rate=max_duplicate_rate,
        primary_metric=primary_metric,
        min_primary_metric=min_primary_metric,
        min_improvement=min_improvement,
        seed=seed,
        deploy_backend=deploy_backend,
        deploy_endpoint=deploy_endpoint,
    )
