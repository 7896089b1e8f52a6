"""Register an immutable model version with its artifacts, digests and lineage."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register_model(
    model: Input[Model],
    schema: Input[Artifact],
    detector: Input[Artifact],
    reference: Input[Dataset],
    evaluation: Input[Artifact],
    explanation: Input[Artifact],
    dataset: Input[Dataset],
    gate: Input[Artifact],
    registry_uri: str,
    model_name: str,
    config: str,
    run_id: str = "",
    seed: int = 0,
    engineer: bool = True,
) -> str:
    """Publish the version: files first, then a manifest with sha256 digests and lineage.

    Every trained model is registered, passed or not, so every decision stays traceable;
    only ``promote_model`` (after a passed gate) makes a version the champion.

    Args:
        model: The fitted pipeline (features + estimator).
        schema: The served input schema, with the fitted cleaning (``clean_data``'s
            ``fitted_schema``); it becomes the version's ``schema.json``.
        detector: The fitted drift detector directory.
        reference: The detector's reference sample.
        evaluation: Holdout evaluation (JSON).
        explanation: Global feature attributions (JSON).
        dataset: The ingested raw data; its URI and digest go into the lineage.
        registry_uri: The model registry (``s3://bucket/prefix`` or a local directory).
        model_name: Registered model name.
        gate: The gate's decision (JSON): verdict, reason, and the champion it was
            compared with, which becomes the parent version.
        config: The model configuration (JSON).
        run_id: The pipeline run that produced the version.
        seed: The run's seed.
        engineer: Whether engineered features were used.

    Returns:
        The new version id, e.g. ``v3``.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from closedloop.quality import QUALITY_BASELINE_FILE
    from closedloop.registry import Lineage, Registry, code_version, layout
    from closedloop.storage import Store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copyfile(model.path, root / layout.MODEL_FILE)
        shutil.copyfile(schema.path, root / layout.SCHEMA_FILE)
        shutil.copytree(detector.path, root / layout.DETECTOR_DIR)
        shutil.copyfile(reference.path, root / layout.REFERENCE_FILE)
        shutil.copyfile(explanation.path, root / layout.EXPLANATION_FILE)
        result = json.loads(Path(evaluation.path).read_text())
        verdict = json.loads(Path(gate.path).read_text())
        baseline = result.pop("quality_baseline", None)
        if baseline is not None:
            (root / QUALITY_BASELINE_FILE).write_text(json.dumps(baseline))
        (root / layout.METRICS_FILE).write_text(json.dumps(result, indent=2, sort_keys=True))
        lineage = Lineage(
            dataset_uri=str(dataset.metadata.get("source", dataset.uri)),
            dataset_sha256=str(dataset.metadata.get("sha256", "")),
            parameters={
                "model_config": json.loads(config),
                "seed": seed,
                "engineer_features": engineer,
                "gate_passed": bool(verdict["passed"]),
                "gate_reason": str(verdict["reason"]),
            },
            code_version=code_version(),
            parent_version=verdict.get("champion_version") or None,
            run_id=run_id,
        )
        manifest = Registry(Store(), registry_uri).register(
            model_name, root, lineage, result["metrics"]
        )
    print(
        f"registered {model_name} {manifest.version} ({len(manifest.files)} files) in {registry_uri}"
    )
    return manifest.version
