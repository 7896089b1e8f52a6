"""File names inside a model version.

One place, used by the register step, the model server, the drift sidecar and the
batch pipeline.
"""

MODEL_FILE = "model.joblib"  # the fitted sklearn Pipeline: ("features", TabularFeatures) + ("model", estimator)
SCHEMA_FILE = "schema.json"  # closedloop.ml.schema.InputSchema.to_json()
DETECTOR_DIR = "detector"  # closedloop.drift.detector.save_detector_dir() output
REFERENCE_FILE = "reference.parquet"  # the raw-feature reference sample the detector was fitted on
METRICS_FILE = "metrics.json"  # holdout metrics of the evaluate step
EXPLANATION_FILE = "explanation.json"  # closedloop.ml.explain.Explanation.to_dict()
# quality_baseline.json: closedloop.quality.QUALITY_BASELINE_FILE, the holdout's metrics and
# per-row losses (closedloop.quality.QualityBaseline), which live quality is tested against.
