"""check_drift called directly against a registry on S3 (SeaweedFS)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from closedloop.components.conftest import Prepared, artifact_out, dataset_in, publish_prepared
from closedloop.components.inference.check_drift.component import check_drift
from kfp import dsl

from closedloop.data import generate_transactions
from closedloop.registry import Registry
from closedloop.storage import Store


@pytest.fixture()
def registry(prepared: Prepared, s3_env: dict[str, str], bucket: str) -> Registry:
    registry = Registry(Store(), f"s3://{bucket}/registry")
    publish_prepared(registry, prepared)
    return registry


def run(registry: Registry, batch: pd.DataFrame, tmp_path: Path, policy_json: str = "") -> tuple:
    arts = {
        "report": artifact_out(dsl.HTML, tmp_path, "report"),
        "metrics": artifact_out(dsl.Metrics, tmp_path, "metrics"),
        "result": artifact_out(dsl.Artifact, tmp_path, "result"),
    }
    drifted = check_drift.python_func(
        dataset=dataset_in(tmp_path / "batch.parquet", batch),
        registry_uri=registry.root,
        model_name="fraud",
        version="v1",
        policy_json=policy_json,
        **arts,
    )
    return drifted, arts


def test_traffic_like_the_training_data_does_not_drift(registry: Registry, tmp_path: Path) -> None:
    drifted, arts = run(registry, generate_transactions(1000, seed=70), tmp_path)
    assert drifted is False
    assert arts["metrics"].metadata["is_drift"] == 0.0
    result = json.loads(Path(arts["result"].path).read_text())
    assert result["is_drift"] is False and result["n_rows"] == 1000
    assert arts["metrics"].metadata["min_p_value"] == pytest.approx(
        min(result["p_values"].values())
    )
    html = Path(arts["report"].path).read_text()
    assert "no drift" in html and "data:image/png;base64," in html


def test_shifted_traffic_drifts(registry: Registry, tmp_path: Path) -> None:
    batch = generate_transactions(1000, seed=71, covariate_shift=1.0)
    drifted, arts = run(registry, batch, tmp_path)
    assert drifted is True
    assert arts["metrics"].metadata["is_drift"] == 1.0
    result = json.loads(Path(arts["result"].path).read_text())
    assert "channel" in result["drifted_features"]
    assert arts["metrics"].metadata["effect_size"] == pytest.approx(result["effect_size"])
    assert "DRIFT" in Path(arts["report"].path).read_text()


def test_the_verdict_is_the_drift_policys(registry: Registry, tmp_path: Path) -> None:
    """One verdict: the batch step judges with the policy the sidecar and trigger use."""
    from closedloop.drift.policy import DriftPolicy
    from closedloop.drift.verdict import window_verdict

    batch = generate_transactions(1000, seed=71, covariate_shift=0.3)
    strict = json.dumps({"effect_size_threshold": 0.9})
    drifted, arts = run(registry, batch, tmp_path, policy_json=strict)
    result = json.loads(Path(arts["result"].path).read_text())
    # Shifted enough to be significant, but no effect reaches 0.9: not drift under this policy.
    assert min(result["p_values"].values()) < 1e-6
    assert drifted is False and result["drifted_features"] == []
    expected = window_verdict(
        DriftPolicy(effect_size_threshold=0.9), result["p_values"], result["effect_sizes"]
    )
    assert drifted == expected.input_drift
