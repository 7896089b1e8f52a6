"""Train the final model: the fitted feature step plus an estimator, one served pipeline."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train_model(
    train: Input[Dataset],
    schema: Input[Artifact],
    features: Input[Model],
    config: str,
    model: Output[Model],
):
    """Fit the estimator on all training rows and save features + estimator as one pipeline.

    Args:
        train: Training rows.
        schema: The served input schema, with the fitted cleaning (``clean_data``'s
            ``fitted_schema``).
        features: The fitted feature step from ``engineer_features``.
        config: Model configuration JSON: ``{"kind": ..., "params": {...}, "seed": ...}``.
        model: The fitted sklearn pipeline (joblib) that is registered and served.
    """
    import json

    from closedloop.components._runtime import (
        fit_on_features,
        load_joblib,
        read_frame,
        read_schema,
        save_joblib,
    )

    from closedloop.ml.train import ModelConfig

    spec = read_schema(schema.path)
    cfg = ModelConfig.from_dict(json.loads(config))
    pipeline = fit_on_features(load_joblib(features.path), read_frame(train.path), spec, cfg)
    save_joblib(pipeline, model)
    model.metadata["kind"] = cfg.kind
    model.metadata["config"] = json.loads(config)
    model.metadata["framework"] = "xgboost" if cfg.kind == "xgboost" else "scikit-learn"
