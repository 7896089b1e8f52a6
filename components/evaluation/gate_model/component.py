"""Gate: the challenger against the current champion on the same holdout."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def gate_model(
    model: Input[Model],
    holdout: Input[Dataset],
    schema: Input[Artifact],
    registry_uri: str,
    model_name: str,
    verdict: Output[Markdown],
    decision: Output[Artifact],
    primary_metric: str = "roc_auc",
    min_primary_metric: float = 0.7,
    min_improvement: float = 0.0,
    alpha: float = 0.05,
    bootstrap_rounds: int = 500,
    first_model: str = "accept_if_thresholds",
    seed: int = 0,
) -> str:
    """Decide whether the challenger may replace the champion.

    Absolute threshold first, then the minimum improvement over the champion, then a
    one-sided paired bootstrap over holdout rows of the metric difference. A threshold
    the champion misses too on the same holdout is an alert (recorded in the decision),
    not a blocker: the challenger must still beat the champion significantly. Without a
    champion, or when the champion meets the threshold, missing it rejects.

    Args:
        model: The challenger pipeline.
        holdout: Rows neither model was trained on by this run.
        schema: The challenger's input schema.
        registry_uri: The model registry (``s3://bucket/prefix``).
        model_name: Registered model name.
        verdict: The decision and its reason as Markdown.
        decision: The decision as JSON (passed, reason, alerts, champion version, metrics),
            read by the register and promote steps.
        primary_metric: The compared metric (e.g. ``roc_auc``, ``f1``, ``rmse``).
        min_primary_metric: Absolute floor (ceiling for error metrics) of the primary metric.
        min_improvement: Improvement over the champion the challenger must exceed.
        alpha: Significance level of the bootstrap test.
        bootstrap_rounds: Paired bootstrap resamples.
        first_model: Without a champion: ``accept_if_thresholds`` or ``reject``.
        seed: Bootstrap seed.

    Returns:
        ``promote`` or ``reject``: the single output a ``dsl.If`` tests. (kfp.local 2.17
        resolves only outputs named ``Output`` in conditions, so the details travel in
        the ``decision`` artifact rather than as named outputs.)
    """
    import tempfile

    from closedloop.components._runtime import (
        load_joblib,
        read_frame,
        read_schema,
        write_json,
        write_text,
    )

    from closedloop.ml.gate import GatePolicy, gate
    from closedloop.ml.train import encode_target, predict_scores
    from closedloop.registry import Registry
    from closedloop.serving.loading import fetch_version
    from closedloop.storage import Store

    spec = read_schema(schema.path)
    rows = read_frame(holdout.path)
    challenger = predict_scores(load_joblib(model.path), rows, spec)
    registry = Registry(Store(), registry_uri)
    pointer = registry.champion(model_name)
    champion_scores = None
    if pointer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            champion = fetch_version(registry, model_name, pointer.version, tmp)
        champion_scores = predict_scores(champion.pipeline, rows, champion.schema)
    policy = GatePolicy(
        min_metric={primary_metric: min_primary_metric},
        primary_metric=primary_metric,
        min_improvement=min_improvement,
        bootstrap_rounds=bootstrap_rounds,
        alpha=alpha,
        first_model=first_model,  # type: ignore[arg-type]
        seed=seed,
    )
    decision_record = gate(
        policy, encode_target(rows[spec.target], spec), challenger, champion_scores
    )
    champion_version = pointer.version if pointer else ""
    title = f"# Gate: challenger vs champion {champion_version or '(none)'}\n\n"
    write_text(title + decision_record.to_markdown(), verdict)
    print(f"gate {'PASSED' if decision_record.passed else 'REJECTED'}: {decision_record.reason}")
    for alert in decision_record.alerts:
        print(f"gate alert: {alert}")
    write_json({**decision_record.to_dict(), "champion_version": champion_version}, decision)
    decision.metadata["passed"] = decision_record.passed
    decision.metadata["alerts"] = list(decision_record.alerts)
    return "promote" if decision_record.passed else "reject"
