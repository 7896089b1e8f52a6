"""ingest_data called directly: local files, partitions, S3, and bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import artifact_out, parquet_bytes, write_parquet
from closedloop.components.data_processing.ingest_data.component import ingest_data
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.ml.ingest import IngestError
from closedloop.storage import Store, sha256_bytes


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(300, seed=3)


def run(source: str, out_dir: Path, file_format: str = "auto") -> dsl.Dataset:
    dataset = artifact_out(dsl.Dataset, out_dir, "dataset")
    ingest_data.python_func(source_uri=source, dataset=dataset, file_format=file_format)
    return dataset


def test_local_parquet_file(frame: pd.DataFrame, tmp_path: Path) -> None:
    source = write_parquet(frame, tmp_path / "in" / "data.parquet")
    dataset = run(str(source), tmp_path / "out")
    written = pd.read_parquet(dataset.path)
    pd.testing.assert_frame_equal(written, frame)
    assert dataset.metadata["rows"] == 300
    assert dataset.metadata["columns"] == list(frame.columns)
    assert dataset.metadata["source"] == str(source)
    assert dataset.metadata["files"] == 1
    assert len(dataset.metadata["sha256"]) == 64
    int(dataset.metadata["sha256"], 16)


def test_local_csv_file_with_explicit_format(frame: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "export.txt"  # a suffix "auto" cannot decide on
    frame.to_csv(source, index=False)
    dataset = run(str(source), tmp_path / "out", file_format="csv")
    written = pd.read_parquet(dataset.path)
    assert len(written) == 300
    assert written["amount"].round(2).tolist() == frame["amount"].round(2).tolist()
    assert written["channel"].tolist() == frame["channel"].tolist()


def test_the_digest_follows_the_bytes(frame: pd.DataFrame, tmp_path: Path) -> None:
    first = run(str(write_parquet(frame, tmp_path / "a" / "data.parquet")), tmp_path / "o1")
    same = run(str(write_parquet(frame, tmp_path / "b" / "data.parquet")), tmp_path / "o2")
    other = run(
        str(write_parquet(frame.iloc[:-1], tmp_path / "c" / "data.parquet")), tmp_path / "o3"
    )
    assert first.metadata["sha256"] == same.metadata["sha256"]
    assert first.metadata["sha256"] != other.metadata["sha256"]


def test_local_hive_partitions(frame: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "table"
    write_parquet(frame.iloc[:100], root / "day=1" / "part-0.parquet")
    write_parquet(frame.iloc[100:], root / "day=2" / "part-0.parquet")
    (root / "_SUCCESS").write_text("")  # a marker file without a data suffix is skipped
    dataset = run(str(root), tmp_path / "out")
    written = pd.read_parquet(dataset.path)
    assert len(written) == 300
    assert dataset.metadata["files"] == 2
    assert written["day"].value_counts().to_dict() == {"2": 200, "1": 100}
    assert dataset.metadata["columns"] == [*frame.columns, "day"]


def test_s3_file_and_partitions(
    frame: pd.DataFrame, tmp_path: Path, s3_env: dict[str, str], bucket: str, s3_store: Store
) -> None:
    data = parquet_bytes(frame)
    s3_store.write_bytes(f"s3://{bucket}/raw/data.parquet", data)
    single = run(f"s3://{bucket}/raw/data.parquet", tmp_path / "single")
    pd.testing.assert_frame_equal(pd.read_parquet(single.path), frame)
    assert single.metadata["source"] == f"s3://{bucket}/raw/data.parquet"
    assert single.metadata["rows"] == 300

    for month, rows in (("01", frame[:120]), ("02", frame[120:])):
        csv = rows.to_csv(index=False).encode()
        s3_store.write_bytes(f"s3://{bucket}/parts/month={month}/part.csv", csv)
    parts = run(f"s3://{bucket}/parts", tmp_path / "parts")
    written = pd.read_parquet(parts.path)
    assert parts.metadata["files"] == 2
    assert len(written) == 300
    assert written["month"].value_counts().to_dict() == {"02": 180, "01": 120}

    # The same bytes under the same name give the same digest on S3 and on disk.
    local = run(str(write_parquet(frame, tmp_path / "copy" / "data.parquet")), tmp_path / "local")
    assert local.metadata["sha256"] == single.metadata["sha256"]
    assert sha256_bytes(data) != single.metadata["sha256"]  # it covers the name, too


def test_s3_prefix_with_trailing_slash(
    frame: pd.DataFrame, tmp_path: Path, s3_env: dict[str, str], bucket: str, s3_store: Store
) -> None:
    # The documented form of a prefix (``s3://bucket/prefix/``). SeaweedFS, like AWS S3
    # with a console-created folder, answers HEAD on "prefix/" with a directory object.
    s3_store.write_bytes(f"s3://{bucket}/parts/day=1/a.parquet", parquet_bytes(frame[:100]))
    s3_store.write_bytes(f"s3://{bucket}/parts/day=2/b.parquet", parquet_bytes(frame[100:]))
    parts = run(f"s3://{bucket}/parts/", tmp_path / "parts")
    assert parts.metadata["files"] == 2
    assert len(pd.read_parquet(parts.path)) == 300


def test_missing_s3_object_names_the_source(
    tmp_path: Path, s3_env: dict[str, str], bucket: str
) -> None:
    with pytest.raises(IngestError, match=f"s3://{bucket}/nothing/here.parquet"):
        run(f"s3://{bucket}/nothing/here.parquet", tmp_path / "out")


def test_missing_local_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.parquet"
    with pytest.raises(IngestError, match=r"no CSV or Parquet file at .*such\.parquet"):
        run(str(missing), tmp_path / "out")
    assert not (tmp_path / "out" / "dataset").exists()


def test_empty_csv_file_names_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(IngestError, match=r"empty\.csv is empty"):
        run(str(empty), tmp_path / "out")
    assert not (tmp_path / "out" / "dataset").exists()


def test_header_only_csv_holds_no_rows(tmp_path: Path) -> None:
    header = tmp_path / "header.csv"
    header.write_text("amount,channel,is_fraud\n")
    with pytest.raises(IngestError, match=r"header\.csv holds no rows"):
        run(str(header), tmp_path / "out")


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not parquet at all PAR1"])
def test_corrupt_parquet_names_the_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(content)
    with pytest.raises(IngestError, match=r"broken\.parquet is not a readable Parquet file"):
        run(str(bad), tmp_path / "out")
    assert not (tmp_path / "out" / "dataset").exists()


def test_corrupt_partition_names_that_partition(frame: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "table"
    write_parquet(frame, root / "part-0.parquet")
    (root / "part-1.parquet").write_bytes(b"garbage")
    with pytest.raises(IngestError, match=r"part-1\.parquet"):
        run(str(root), tmp_path / "out")


def test_partitions_with_different_columns_are_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "table"
    write_parquet(frame, root / "part-0.parquet")
    write_parquet(frame.drop(columns=["country"]), root / "part-1.parquet")
    with pytest.raises(IngestError, match=r"part-1\.parquet has different columns.*country"):
        run(str(root), tmp_path / "out")
