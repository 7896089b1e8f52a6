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
    registry_uri: str = "",
    model_name: str = "",
    max_missing_rate: float = 0.2,
    max_duplicate_rate: float = 0.05,
    max_outlier_rate: float = 0.05,
    max_inconsistent_format_rate: float = 0.5,
    min_minority_class_rate: float = 0.01,
    min_rows: int = 100,
    range_slack: float = 0.5,
    max_new_categories: int = 3,
):
    """Check types, ranges, categories and quality; stop the pipeline on an error.

    A given schema (``schema_uri``) is a contract: columns and types must match, the
    target may not gain a class, numeric ranges may widen by at most ``range_slack`` of
    their span (reported), and up to ``max_new_categories`` new categories per column
    are accepted (reported). Only a schema inferred from the data itself, which checks
    nothing against the past, skips these rules.

    Args:
        dataset: Raw rows (Parquet) with the features and the target column.
        target: Name of the label column.
        schema: The schema the data was checked against (JSON), passed downstream; a
            given schema grown by the changes the contract accepted.
        report: Human-readable validation report shown in the KFP UI.
        metrics: Missing, duplicate, outlier and format rates as KFP metrics.
        schema_uri: The schema to check against: a schema JSON (``s3://`` or local),
            ``champion`` for the champion's in the registry (inferred from this dataset,
            and said so, while there is no champion yet), or empty to infer it from
            this dataset.
        registry_uri: The model registry, for ``schema_uri="champion"``.
        model_name: Registered model name, for ``schema_uri="champion"``.
        max_missing_rate: Highest share of missing values allowed in any column.
        max_duplicate_rate: Highest share of exact duplicate rows.
        max_outlier_rate: Highest share of IQR outliers in a numeric column.
        max_inconsistent_format_rate: Highest share of date strings not in the column's
            dominant format (cleaning normalizes the rest).
        min_minority_class_rate: Lowest share of the rarest class.
        min_rows: Fewest rows accepted.
        range_slack: Against a given schema: how far a numeric range may widen, as a share
            of its span on each side.
        max_new_categories: Against a given schema: new categories accepted per column.
    """
    from closedloop.components._runtime import read_frame, write_schema, write_text

    from closedloop.ml.schema import InputSchema, infer_schema
    from closedloop.ml.validate import (
        QualityThresholds,
        SchemaContract,
        evolve_schema,
        validate_dataset,
    )
    from closedloop.registry import Registry
    from closedloop.serving.loading import read_version_schema
    from closedloop.storage import Store

    frame = read_frame(dataset.path)
    if target not in frame.columns:
        raise ValueError(
            f"target column {target!r} is not in {dataset.metadata.get('source', dataset.uri)}; "
            f"columns are {list(frame.columns)}"
        )
    given = None
    origin = "inferred from this dataset"
    if schema_uri == "champion":
        if not registry_uri or not model_name:
            raise ValueError('schema_uri="champion" needs registry_uri and model_name')
        registry = Registry(Store(), registry_uri)
        pointer = registry.champion(model_name)
        if pointer is None:
            origin = f"inferred from this dataset: {model_name} has no champion yet"
        else:
            _, given = read_version_schema(registry, model_name, pointer.version)
            origin = f"the champion's, {model_name} {pointer.version}"
    elif schema_uri:
        given = InputSchema.from_json(Store().read_bytes(schema_uri).decode())
        origin = schema_uri
    contract = None
    if given is None:
        expected = infer_schema(frame, target)
    else:
        contract = SchemaContract(range_slack=range_slack, max_new_categories=max_new_categories)
        expected = given
    thresholds = QualityThresholds(
        max_missing_rate=max_missing_rate,
        max_duplicate_rate=max_duplicate_rate,
        max_outlier_rate=max_outlier_rate,
        max_inconsistent_format_rate=max_inconsistent_format_rate,
        min_minority_class_rate=min_minority_class_rate,
        min_rows=min_rows,
    )
    result = validate_dataset(frame, expected, thresholds, contract)
    write_text(result.to_html(), report)
    for name, value in result.to_metrics().items():
        metrics.log_metric(name, float(value))
    if contract is not None and result.passed:
        expected = evolve_schema(frame, expected, contract)
    write_schema(expected, schema)
    schema.metadata["origin"] = origin
    print(f"schema: {origin}")
    if not result.passed:
        source = dataset.metadata.get("source", dataset.uri)
        raise ValueError(f"data validation failed for {source}: {result.summary()}")
    for issue in result.warnings:
        print(f"validation warning: {issue.message}")
    print(f"validation passed: {result.summary()}")
