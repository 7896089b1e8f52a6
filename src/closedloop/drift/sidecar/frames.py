"""Parquet for checked rows: one Arrow schema per model, so every file reads back alike.

Coerced rows (:func:`closedloop.ml.schema.coerce_frame`) hold ``float64`` for numeric and
boolean columns, ``str``/``NaN`` objects for categorical ones and ``datetime64[ns]`` for
datetimes. Writing them with an explicit schema keeps a categorical column that happens
to be all missing a string column, so files of one model can be read as one dataset.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pandas as pd

from closedloop.ml.schema import InputSchema

if TYPE_CHECKING:
    import pyarrow as pa


def feature_fields(schema: InputSchema) -> list[pa.Field]:
    """Return the Arrow fields of the schema's feature columns, in order."""
    import pyarrow as pa

    kinds = {
        "numeric": pa.float64(),
        "boolean": pa.float64(),
        "categorical": pa.string(),
        "datetime": pa.timestamp("ns"),
    }
    return [pa.field(c.name, kinds[c.kind], nullable=True) for c in schema.columns]


def target_type(schema: InputSchema) -> pa.DataType:
    """Return the Arrow type of the schema's target column."""
    import pyarrow as pa

    if schema.task == "regression":
        return pa.float64()
    classes = schema.classes or ()
    if all(isinstance(c, bool) for c in classes):
        return pa.bool_()
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return pa.int64()
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return pa.float64()
    return pa.string()


def to_parquet(frame: pd.DataFrame, fields: list[pa.Field]) -> bytes:
    """Serialize *frame* (exactly the columns of *fields*) to Parquet bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(
        frame.loc[:, [f.name for f in fields]], schema=pa.schema(fields), preserve_index=False
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def from_parquet(data: bytes) -> pd.DataFrame:
    """Read Parquet bytes into a frame; missing strings come back as ``NaN``, as coerced."""
    import pyarrow.parquet as pq

    frame = pq.read_table(io.BytesIO(data)).to_pandas()
    for name in frame.columns:
        if frame[name].dtype == object:
            frame[name] = frame[name].where(frame[name].notna(), float("nan"))
    return frame
