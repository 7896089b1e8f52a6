"""Validate a dataset against a schema and data-quality thresholds; fail the run if broken."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_data(
    dataset: Input[Dataset],
    target: str,
    schema: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    schema_uri: str = "",
    max_missing_rate: float = 0.2,
    max_duplicate_rate: float = 0.05,
    max_outlier_rate: float = 0.05,
    max_inconsistent_format_rate: float = 0.5,
    min_minority_class_rate: float = 0.01,
    min_rows: int = 100,
):
    """Check types, ranges, categories and quality; stop the pipeline on an error.

    Args:
        dataset: Raw rows (Parquet) with the features and the target column.
        target: Name of the label column.
        schema: The schema the data was checked against (JSON), passed downstream.
        report: Human-readable validation report shown in the KFP UI.
        metrics: Missing, duplicate, outlier and format rates as KFP metrics.
        schema_uri: A schema JSON (``s3://`` or local) to check against, e.g. the champion's;
            empty to infer it from this dataset.
        max_missing_rate: Highest share of missing values allowed in any column.
        max_duplicate_rate: Highest share of exact duplicate rows.
        max_outlier_rate: Highest share of IQR outliers in a numeric column.
        max_inconsistent_format_rate: Highest share of date strings not in the column's
            dominant format (cleaning normalizes the rest).
        min_minority_class_rate: Lowest share of the rarest class.
        min_rows: Fewest rows accepted.
    """
    from closedloop.components._runtime import read_frame, write_schema, write_text

    from closedloop.ml.schema import InputSchema, infer_schema
    from closedloop.ml.validate import QualityThresholds, validate_dataset
    from closedloop.storage import Store

    frame = read_frame(dataset.path)
    if target not in frame.columns:
        raise ValueError(
            f"target column {target!r} is not in {dataset.metadata.get('source', dataset.uri)}; "
            f"columns are {list(frame.columns)}"
        )
    if schema_uri:
        expected = InputSchema.from_json(Store().read_bytes(schema_uri).decode())
    else:
        expected = infer_schema(frame, target)
    thresholds = QualityThresholds(
        max_missing_rate=max_missing_rate,
        max_duplicate_rate=max_duplicate_rate,
        max_outlier_rate=max_outlier_rate,
        max_inconsistent_format_rate=max_inconsistent_format_rate,
        min_minority_class_rate=min_minority_class_rate,
        min_rows=min_rows,
    )
    result = validate_dataset(frame, expected, thresholds)
    write_text(result.to_html(), report)
    for name, value in result.to_metrics().items():
        metrics.log_metric(name, float(value))
    write_schema(expected, schema)
    if not result.passed:
        source = dataset.metadata.get("source", dataset.uri)
        raise ValueError(f"data validation failed for {source}: {result.summary()}")
    print(f"validation passed: {result.summary()}")
