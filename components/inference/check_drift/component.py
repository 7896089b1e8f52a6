"""Check a batch for drift with the detector fitted alongside the model version."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def check_drift(
    dataset: Input[Dataset],
    registry_uri: str,
    model_name: str,
    version: str,
    report: Output[HTML],
    metrics: Output[Metrics],
    result: Output[Artifact],
    policy_json: str = "",
) -> bool:
    """Run the version's alibi-detect detector on the batch and judge it with the drift policy.

    The verdict is the drift policy's (the same function the drift-detector sidecar and
    the retrain trigger use): a feature drifts when its p-value is below the
    Bonferroni-corrected ``p_value`` and its effect size reaches
    ``effect_size_threshold``.

    Args:
        dataset: Rows that were scored.
        registry_uri: The model registry.
        model_name: Registered model name.
        version: The version whose detector to use.
        report: Per-feature p-values and effect sizes, plotted against the threshold.
        metrics: The drift flag, the smallest p-value and the largest effect size.
        result: The detector's full answer and the verdict as JSON.
        policy_json: The drift policy as JSON (the ``policy.json`` the services read);
            empty for the defaults.

    Returns:
        Whether the batch drifted.
    """
    import base64
    import html
    import io
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from closedloop.components._runtime import read_frame, write_json, write_text

    from closedloop.drift.detector import load_detector_dir
    from closedloop.drift.policy import DriftPolicy
    from closedloop.drift.verdict import window_verdict
    from closedloop.registry import Registry
    from closedloop.registry.layout import DETECTOR_DIR
    from closedloop.storage import Store

    with tempfile.TemporaryDirectory() as tmp:
        local = Registry(Store(), registry_uri).fetch(model_name, version, tmp)
        detector = load_detector_dir(local.path / DETECTOR_DIR)
    policy = DriftPolicy.from_json(policy_json) if policy_json.strip() else DriftPolicy()
    drift = detector.score(read_frame(dataset.path))
    judged = window_verdict(policy, drift.p_values, drift.effect_sizes)
    threshold = policy.feature_p_threshold(len(drift.p_values))
    metrics.log_metric("is_drift", float(judged.input_drift))
    metrics.log_metric("min_p_value", min(drift.p_values.values()))
    metrics.log_metric("effect_size", float(drift.effect_size))
    write_json(
        {
            **drift.to_dict(),
            "drifted_features": list(judged.drifted_features),
            "is_drift": judged.input_drift,
            "policy": policy.to_dict(),
        },
        result,
    )
    names = list(drift.p_values)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    ax.barh(
        names,
        [drift.p_values[n] for n in names],
        color=["#c0392b" if n in judged.drifted_features else "#2e86c1" for n in names],
    )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("p-value (log scale)")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    image = base64.b64encode(png.getvalue()).decode()
    verdict = "DRIFT" if judged.input_drift else "no drift"
    write_text(
        f"<html><body><h1>Drift check: {html.escape(model_name)} {html.escape(version)} — {verdict}</h1>"
        f"<p>{drift.n_rows} rows; drifted features (p below {threshold:.3g} and effect size at least {policy.effect_size_threshold}): {html.escape(', '.join(judged.drifted_features) or 'none')}</p>"
        f'<img src="data:image/png;base64,{image}"/></body></html>',
        report,
    )
    return judged.input_drift
