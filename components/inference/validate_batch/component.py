"""Validate a batch to score against the served model version's input schema."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_batch(
    dataset: Input[Dataset],
    registry_uri: str,
    model_name: str,
    report: Output[HTML],
    metrics: Output[Metrics],
    version: str = "champion",
) -> NamedTuple("BatchCheck", version=str, rows=int):
    """Check names, types and values with the same check the model server applies.

    Args:
        dataset: Rows to score (no label needed).
        registry_uri: The model registry.
        model_name: Registered model name.
        report: Missing values and unknown categories per column.
        metrics: Rows, missing rate and unknown-category counts.
        version: A version id or ``champion``; resolved once here so every later step
            uses the same version.

    Returns:
        The resolved version id and the number of rows.
    """
    import html
    from collections import namedtuple

    from closedloop.components._runtime import read_frame, write_text

    from closedloop.ml.schema import InputSchema, SchemaError, check_frame
    from closedloop.registry import Registry
    from closedloop.registry.layout import SCHEMA_FILE
    from closedloop.storage import Store

    registry = Registry(Store(), registry_uri)
    resolved = registry.resolve(model_name, version)
    schema = InputSchema.from_json(registry.read_file(model_name, resolved, SCHEMA_FILE).decode())
    frame = read_frame(dataset.path)
    source = dataset.metadata.get("source", dataset.uri)
    try:
        checked = check_frame(
            frame[[c for c in schema.feature_names if c in frame.columns]], schema
        )
    except SchemaError as exc:
        raise ValueError(f"batch {source} does not fit {model_name} {resolved}: {exc}") from exc
    missing = {c: float(frame[c].isna().mean()) for c in schema.feature_names}
    metrics.log_metric("rows", float(len(frame)))
    metrics.log_metric("max_missing_rate", max(missing.values(), default=0.0))
    for column, count in checked.unknown_categories.items():
        metrics.log_metric(f"unknown_categories_{column}", float(count))
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{missing[c]:.2%}</td><td>{checked.unknown_categories.get(c, 0)}</td></tr>"
        for c in schema.feature_names
    )
    write_text(
        f"<html><body><h1>Batch check: {html.escape(model_name)} {resolved}</h1>"
        f"<p>{len(frame)} rows from {html.escape(str(source))} fit the schema.</p>"
        f"<table border=1><tr><th>column</th><th>missing</th><th>unknown categories</th></tr>{rows}</table>"
        "</body></html>",
        report,
    )
    return namedtuple("BatchCheck", ["version", "rows"])(resolved, len(frame))
