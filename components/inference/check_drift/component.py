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
) -> bool:
    """Run the version's alibi-detect detector on the batch and plot the p-values.

    Args:
        dataset: Rows that were scored.
        registry_uri: The model registry.
        model_name: Registered model name.
        version: The version whose detector to use.
        report: Per-feature p-values and effect sizes, plotted against the threshold.
        metrics: The drift flag, the smallest p-value and the largest effect size.
        result: The detector's full answer as JSON.

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
    from closedloop.registry import Registry
    from closedloop.registry.layout import DETECTOR_DIR
    from closedloop.storage import Store

    with tempfile.TemporaryDirectory() as tmp:
        local = Registry(Store(), registry_uri).fetch(model_name, version, tmp)
        detector = load_detector_dir(local.path / DETECTOR_DIR)
    drift = detector.score(read_frame(dataset.path))
    metrics.log_metric("is_drift", float(drift.is_drift))
    metrics.log_metric("min_p_value", min(drift.p_values.values()))
    metrics.log_metric("effect_size", float(drift.effect_size))
    write_json(drift.to_dict(), result)
    names = list(drift.p_values)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    ax.barh(
        names,
        [drift.p_values[n] for n in names],
        color=["#c0392b" if drift.p_values[n] < drift.threshold else "#2e86c1" for n in names],
    )
    ax.axvline(
        drift.threshold, color="black", linestyle="--", label=f"threshold {drift.threshold:.3g}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("p-value (log scale)")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    image = base64.b64encode(png.getvalue()).decode()
    verdict = "DRIFT" if drift.is_drift else "no drift"
    write_text(
        f"<html><body><h1>Drift check: {html.escape(model_name)} {html.escape(version)} — {verdict}</h1>"
        f"<p>{drift.n_rows} rows; drifted features: {html.escape(', '.join(drift.drifted_features) or 'none')}</p>"
        f'<img src="data:image/png;base64,{image}"/></body></html>',
        report,
    )
    return bool(drift.is_drift)
