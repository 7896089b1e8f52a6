"""validate_batch called directly against a registry on S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from closedloop.components.conftest import (
    TARGET,
    Prepared,
    artifact_out,
    dataset_in,
    publish_prepared,
)
from closedloop.components.inference.validate_batch.component import validate_batch
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.registry import Registry, VersionNotFoundError
from closedloop.storage import Store


@pytest.fixture()
def registry(prepared: Prepared, s3_env: dict[str, str], bucket: str) -> Registry:
    registry = Registry(Store(), f"s3://{bucket}/registry")
    publish_prepared(registry, prepared)
    registry.promote("fraud", "v1", "first model")
    publish_prepared(registry, prepared)  # v2, not promoted
    return registry


def run(registry: Registry, frame, tmp_path: Path, **kwargs: object) -> tuple:
    report = artifact_out(dsl.HTML, tmp_path, "report")
    metrics = artifact_out(dsl.Metrics, tmp_path, "metrics")
    result = validate_batch.python_func(
        dataset=dataset_in(tmp_path / "batch.parquet", frame, source="s3://in/batch.parquet"),
        registry_uri=registry.root,
        model_name="fraud",
        report=report,
        metrics=metrics,
        **kwargs,
    )
    return result, metrics, Path(report.path)


def test_a_fitting_batch_resolves_the_champion(registry: Registry, tmp_path: Path) -> None:
    batch = generate_transactions(150, seed=50).drop(columns=[TARGET])
    result, metrics, report = run(registry, batch, tmp_path)
    assert (result.version, result.rows) == ("v1", 150)
    assert metrics.metadata["rows"] == 150.0
    assert metrics.metadata["max_missing_rate"] == 0.0
    html = report.read_text()
    assert "fraud v1" in html and "150 rows from s3://in/batch.parquet; 150 will be scored" in html
    assert metrics.metadata["refused_rows"] == 0.0


def test_an_explicit_version_is_kept(registry: Registry, tmp_path: Path) -> None:
    batch = generate_transactions(50, seed=51)
    result, _, _ = run(registry, batch, tmp_path, version="v2")
    assert result.version == "v2"


def test_unknown_categories_are_counted(registry: Registry, tmp_path: Path) -> None:
    batch = generate_transactions(100, seed=52).drop(columns=[TARGET])
    batch.loc[batch.index[:7], "country"] = "ZZ"
    _, metrics, _ = run(registry, batch, tmp_path)
    assert metrics.metadata["unknown_categories_country"] == 7.0


def test_rows_the_server_would_refuse_are_reported_not_fatal(
    registry: Registry, tmp_path: Path
) -> None:
    batch = generate_transactions(100, seed=53).drop(columns=[TARGET])
    batch["amount"] = batch["amount"].astype(str)
    batch.loc[batch.index[[3, 40, 41, 77, 90]], "amount"] = "lots"
    result, metrics, report = run(registry, batch, tmp_path)
    assert result.rows == 100
    assert metrics.metadata["refused_rows"] == 5.0
    assert metrics.metadata["refused_not_a_number"] == 5.0
    html = report.read_text()
    assert "5 rows will not be scored" in html and "95 will be scored" in html
    assert (
        "<tr><td>40</td><td>amount</td><td>not_a_number</td><td>&#x27;lots&#x27;</td></tr>" in html
    )


def test_a_missing_column_fails_naming_it(registry: Registry, tmp_path: Path) -> None:
    batch = generate_transactions(100, seed=54).drop(columns=[TARGET, "channel"])
    with pytest.raises(ValueError, match="channel"):
        run(registry, batch, tmp_path)


def test_an_unknown_version_fails(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(VersionNotFoundError, match="v7"):
        run(registry, generate_transactions(20, seed=55), tmp_path, version="v7")
