"""Feature ablation: the same data through two feature branches, metrics side by side."""

from closedloop.components.data_processing.clean_data.component import clean_data
from closedloop.components.data_processing.engineer_features.component import engineer_features
from closedloop.components.data_processing.ingest_data.component import ingest_data
from closedloop.components.data_processing.split_data.component import split_data
from closedloop.components.data_processing.validate_data.component import validate_data
from closedloop.components.evaluation.compare_evaluations.component import compare_evaluations
from closedloop.components.evaluation.evaluate_model.component import evaluate_model
from closedloop.components.training.train_model.component import train_model
from closedloop.pipelines._cluster import network_bound, uncached
from kfp import dsl

DEFAULT_CONFIG = '{"kind": "xgboost", "params": {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1}, "seed": 0}'


@dsl.pipeline(
    name="closedloop-feature-ablation",
    description="Train the same model with and without engineered features and compare them.",
)
def feature_ablation_pipeline(
    data_uri: str,
    target: str = "is_fraud",
    model_config: str = DEFAULT_CONFIG,
    test_size: float = 0.2,
    seed: int = 0,
):
    """Compare a model with engineered features against the same model without them.

    Args:
        data_uri: Raw data: ``s3://`` file or prefix, CSV or Parquet.
        target: The label column.
        model_config: The model configuration both branches train (JSON).
        test_size: Share of rows held out.
        seed: Seed of the split.
    """
    raw = uncached(network_bound(ingest_data(source_uri=data_uri)))
    checked = validate_data(dataset=raw.outputs["dataset"], target=target)
    cleaned = clean_data(dataset=raw.outputs["dataset"], schema=checked.outputs["schema"])
    split = split_data(
        dataset=cleaned.outputs["cleaned"], target=target, test_size=test_size, seed=seed
    )
    # The served schema: validation's, carrying the cleaning fitted on these rows.
    schema = cleaned.outputs["fitted_schema"]
    evaluations = {}
    for engineer in (False, True):
        branch = "engineered" if engineer else "base"
        features = engineer_features(train=split.outputs["train"], schema=schema, engineer=engineer)
        features.set_display_name(f"features-{branch}")
        trained = train_model(
            train=split.outputs["train"],
            schema=schema,
            features=features.outputs["features"],
            config=model_config,
        )
        trained.set_display_name(f"train-{branch}")
        evaluated = evaluate_model(
            model=trained.outputs["model"], holdout=split.outputs["holdout"], schema=schema
        )
        evaluated.set_display_name(f"evaluate-{branch}")
        evaluations[branch] = evaluated.outputs["evaluation"]
    compare_evaluations(
        baseline=evaluations["base"],
        variant=evaluations["engineered"],
        baseline_name="base features",
        variant_name="engineered features",
    )
