"""Propose N hyperparameter configurations (deterministic random search)."""

from kfp import dsl

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def propose_candidates(
    n_candidates: int, seed: int, kinds: str = "xgboost,random_forest,logistic_regression"
) -> list:
    """Draw candidate model configurations for the parallel tuning loop.

    Args:
        n_candidates: How many configurations to try.
        seed: Seed of the search; the same seed proposes the same list.
        kinds: Comma-separated model kinds: xgboost, random_forest, logistic_regression,
            gradient_boosting.

    Returns:
        Configurations as JSON strings (JSON keeps integer hyperparameters integers).
    """
    import json

    from closedloop.ml.tune import candidate_configs

    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    return [
        json.dumps(c.to_dict(), sort_keys=True)
        for c in candidate_configs(n_candidates, seed, wanted)
    ]
