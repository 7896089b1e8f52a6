"""Clean a dataset: dedupe, normalize formats, impute, clip outliers; record every choice.

It also writes the schema to serve: the given schema carrying the fitted cleaning (fill
values and clipping fences per column), so serving treats a value as training did.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def clean_data(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    cleaned: Output[Dataset],
    record: Output[Markdown],
    fitted_schema: Output[Artifact],
    drop_duplicates: bool = True,
    clip_outliers: bool = True,
    impute_numeric: str = "median",
    impute_categorical: str = "most_frequent",
):
    """Apply the cleaning steps and write what each one changed.

    Args:
        dataset: Validated raw rows.
        schema: The schema from validation.
        cleaned: The cleaned rows; metadata records every cleaning choice with counts.
        record: The cleaning record as a Markdown table.
        fitted_schema: The schema with the fitted cleaning (per column the fill value
            for missing values and the outlier fences with their clip targets). Pass
            it, not validation's schema, to every later step: it is the served schema,
            so serving and batch inference treat a value as cleaning did here.
        drop_duplicates: Drop exact duplicate rows, keeping the first.
        clip_outliers: Clip IQR outliers of numeric columns to inlier quantiles.
        impute_numeric: ``median`` or ``mean``.
        impute_categorical: ``most_frequent`` or ``missing`` (a new category).
    """
    from closedloop.components._runtime import (
        read_frame,
        read_schema,
        write_frame,
        write_schema,
        write_text,
    )

    from closedloop.ml import clean

    options = clean.CleanOptions(
        drop_duplicates=drop_duplicates,
        clip_outliers=clip_outliers,
        impute_numeric=impute_numeric,  # type: ignore[arg-type]
        impute_categorical=impute_categorical,  # type: ignore[arg-type]
    )
    given = read_schema(schema.path)
    frame, done = clean.clean_dataset(read_frame(dataset.path), given, options)
    write_frame(frame, cleaned)
    write_schema(clean.fitted_schema(given, done), fitted_schema)
    cleaned.metadata["cleaning"] = done.to_dict()
    cleaned.metadata["source"] = dataset.metadata.get("source", "")
    cleaned.metadata["sha256"] = dataset.metadata.get("sha256", "")
    lines = ["| action | column | rows |", "|---|---|---|"]
    lines += [f"| {s.action} | {s.column or '—'} | {s.count} |" for s in done.steps]
    write_text("# Cleaning record\n\n" + "\n".join(lines) + "\n", record)
