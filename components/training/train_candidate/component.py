"""Train one candidate configuration and score it on a validation split of the training rows."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train_candidate(
    train: Input[Dataset],
    schema: Input[Artifact],
    features: Input[Model],
    config: str,
    valid_fraction: float = 0.2,
    seed: int = 0,
) -> str:
    """Fit a candidate on part of the training rows and score it on the rest.

    The holdout of the pipeline is never seen here: the validation rows are carved out
    of the training rows.

    Args:
        train: Training rows.
        schema: The served input schema, with the fitted cleaning (``clean_data``'s
            ``fitted_schema``).
        features: The fitted feature step.
        config: The candidate's configuration (JSON from ``propose_candidates``).
        valid_fraction: Share of training rows used to score the candidate.
        seed: Seed of the inner split.

    Returns:
        The candidate result as JSON: config, score and metric name.
    """
    import json

    from closedloop.components._runtime import fit_on_features, load_joblib, read_frame, read_schema

    from closedloop.ml.split import split_dataset
    from closedloop.ml.train import ModelConfig
    from closedloop.ml.tune import CandidateResult, score_candidate, score_metric_name

    spec = read_schema(schema.path)
    fit_rows, valid_rows = split_dataset(
        read_frame(train.path), spec.target, test_size=valid_fraction, seed=seed
    )
    cfg = ModelConfig.from_dict(json.loads(config))
    pipeline = fit_on_features(load_joblib(features.path), fit_rows, spec, cfg)
    result = CandidateResult(
        config=cfg,
        score=score_candidate(pipeline, valid_rows, spec),
        metric=score_metric_name(spec),
    )
    print(f"candidate {cfg.kind}: {result.metric}={result.score:.4f}")
    return json.dumps(result.to_dict(), sort_keys=True)
