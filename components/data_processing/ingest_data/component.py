"""Ingest raw tabular data (CSV/Parquet, a file or partitions, S3 or local) as Parquet."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest_data(source_uri: str, dataset: Output[Dataset], file_format: str = "auto"):
    """Read raw data into one Parquet dataset with its content digest.

    Args:
        source_uri: ``s3://bucket/key``, an ``s3://`` prefix of partitions, a local file or
            directory.
        dataset: The table as Parquet; metadata holds rows, columns, sha256 and source.
        file_format: ``csv``, ``parquet``, or ``auto`` to decide by file suffix.
    """
    from closedloop.components._runtime import write_frame

    from closedloop.ml.ingest import ingest

    result = ingest(source_uri, file_format=file_format)  # type: ignore[arg-type]
    write_frame(result.frame, dataset)
    dataset.metadata.update(result.metadata())
    print(f"ingested {len(result.frame)} rows from {len(result.files)} file(s) at {source_uri}")
