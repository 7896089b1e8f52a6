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
    """Check every row with the model server's own check; report the ones it would refuse.

    A batch without a column the model takes fails here. A row with a value the server
    would refuse (not a number, not a date, missing where nothing fills it) does not
    fail the run: it is listed in the report, counted in ``refused_rows`` and left out
    by ``batch_predict``.

    Args:
        dataset: Rows to score (no label needed).
        registry_uri: The model registry.
        model_name: Registered model name.
        report: Rows that will not be scored (row, column, reason), missing values and
            unknown categories per column.
        metrics: Rows, refused rows (in all and per reason), missing rate and
            unknown-category counts.
        version: A version id or ``champion``; resolved once here so every later step
            uses the same version.

    Returns:
        The resolved version id and the number of rows.
    """
    import html
    from collections import namedtuple

    from closedloop.components._runtime import read_frame, write_text

    from closedloop.ml.rowplan import RowPlan
    from closedloop.ml.schema import SchemaError
    from closedloop.registry import Registry
    from closedloop.serving.loading import read_version_schema
    from closedloop.storage import Store

    resolved, schema = read_version_schema(Registry(Store(), registry_uri), model_name, version)
    frame = read_frame(dataset.path)
    source = dataset.metadata.get("source", dataset.uri)
    try:
        # The model server's own check. A missing column stops the run; a row the
        # server would refuse is reported here and left out by batch_predict.
        checked = RowPlan(schema).check_frame(frame)
    except SchemaError as exc:
        raise ValueError(f"batch {source} does not fit {model_name} {resolved}: {exc}") from exc
    missing = {c: float(frame[c].isna().mean()) for c in schema.feature_names}
    refused = checked.refusals_by_reason()
    metrics.log_metric("rows", float(len(frame)))
    metrics.log_metric("refused_rows", float(len(checked.errors)))
    metrics.log_metric("max_missing_rate", max(missing.values(), default=0.0))
    for reason, count in refused.items():
        metrics.log_metric(f"refused_{reason}", float(count))
    for column, count in checked.unknown_categories.items():
        metrics.log_metric(f"unknown_categories_{column}", float(count))
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{missing[c]:.2%}</td><td>{checked.unknown_categories.get(c, 0)}</td></tr>"
        for c in schema.feature_names
    )
    shown = checked.errors[:50]
    refusals = "".join(
        f"<tr><td>{e.row}</td><td>{html.escape(e.column)}</td><td>{html.escape(e.reason)}</td>"
        f"<td>{html.escape(e.value)}</td></tr>"
        for e in shown
    )
    refused_html = (
        f"<h2>{len(checked.errors)} rows will not be scored</h2>"
        "<table border=1><tr><th>row</th><th>column</th><th>reason</th><th>value</th></tr>"
        f"{refusals}</table>"
        + (
            f"<p>... and {len(checked.errors) - len(shown)} more.</p>"
            if len(checked.errors) > len(shown)
            else ""
        )
        if checked.errors
        else "<p>Every row fits the schema.</p>"
    )
    for error in shown[:20]:
        print(f"will not be scored: {error.describe()}")
    write_text(
        f"<html><body><h1>Batch check: {html.escape(model_name)} {resolved}</h1>"
        f"<p>{len(frame)} rows from {html.escape(str(source))}; "
        f"{len(frame) - len(checked.errors)} will be scored.</p>{refused_html}"
        f"<table border=1><tr><th>column</th><th>missing</th><th>unknown categories</th></tr>{rows}</table>"
        "</body></html>",
        report,
    )
    return namedtuple("BatchCheck", ["version", "rows"])(resolved, len(frame))
