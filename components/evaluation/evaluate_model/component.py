"""Evaluate a model on the holdout: metrics, ROC curve, confusion matrix and a plotted report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    holdout: Input[Dataset],
    schema: Input[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
):
    """Score the holdout and publish what the KFP UI can draw.

    Args:
        model: The fitted pipeline.
        holdout: Rows never trained on.
        schema: The input schema.
        metrics: Accuracy, F1, ROC AUC, log loss (classification) or RMSE, MAE, R² (regression).
        classification_metrics: ROC curve and confusion matrix, drawn by the KFP UI.
        report: HTML report with the plots.
        evaluation: The full result as JSON (stored with the registered version), with
            the version's quality baseline (``quality_baseline``: holdout metrics and
            per-row losses) that the drift-detector sidecar tests live quality against.
    """
    from closedloop.components._runtime import (
        load_joblib,
        read_frame,
        read_schema,
        write_json,
        write_text,
    )

    from closedloop.ml.evaluate import evaluate_model as evaluate
    from closedloop.ml.train import encode_target, predict_scores
    from closedloop.quality import QualityBaseline

    pipeline, rows, input_schema = (
        load_joblib(model.path),
        read_frame(holdout.path),
        read_schema(schema.path),
    )
    result = evaluate(pipeline, rows, input_schema)
    baseline = QualityBaseline.from_holdout(
        input_schema.task,
        encode_target(rows[input_schema.target], input_schema),
        predict_scores(pipeline, rows, input_schema),
        n_classes=len(input_schema.classes or ()),
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, float(value))
    if result.roc_curve is not None:
        fpr, tpr, thresholds = result.roc_curve
        # KFP rejects infinite thresholds (sklearn's first point); clamp for the UI only.
        classification_metrics.log_roc_curve(fpr, tpr, [min(float(t), 1.0) for t in thresholds])
    if result.confusion_matrix:
        classification_metrics.log_confusion_matrix(result.labels, result.confusion_matrix)
    write_text(result.to_html(), report)
    write_json({**result.to_dict(), "quality_baseline": baseline.to_dict()}, evaluation)
