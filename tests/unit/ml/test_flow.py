"""The whole pure flow: generate → validate → clean → split → tune/train → evaluate → gate."""

from closedloop.data import DEFAULT_TARGET, generate_transactions
from closedloop.ml.clean import clean_dataset
from closedloop.ml.evaluate import evaluate_model
from closedloop.ml.explain import explain_global
from closedloop.ml.gate import GatePolicy, gate
from closedloop.ml.schema import infer_schema
from closedloop.ml.split import split_dataset
from closedloop.ml.train import ModelConfig, encode_target, predict_scores, train_model
from closedloop.ml.tune import CandidateResult, score_candidate, select_best
from closedloop.ml.validate import validate_dataset

CANDIDATES = (
    ModelConfig("xgboost", {"n_estimators": 80, "max_depth": 3, "n_jobs": 1}),
    ModelConfig("logistic_regression", {"C": 1.0}),
)


def test_pure_flow_end_to_end():
    schema = infer_schema(generate_transactions(3000, seed=201), DEFAULT_TARGET)
    raw = generate_transactions(8000, seed=202, dirty=0.3)

    report = validate_dataset(raw, schema)
    assert not report.passed
    assert "transaction_time" in report.failing_columns()

    cleaned, record = clean_dataset(raw, schema)
    assert validate_dataset(cleaned, schema).passed
    assert record.n_rows_out < len(raw)

    train, holdout = split_dataset(
        cleaned, DEFAULT_TARGET, test_size=0.25, strategy="time", time_column="transaction_time"
    )
    fit, valid = split_dataset(train, DEFAULT_TARGET, test_size=0.25, seed=0)
    results = []
    for index, config in enumerate(CANDIDATES):
        pipeline = train_model(fit, schema, config)
        results.append(
            CandidateResult(
                config, score_candidate(pipeline, valid, schema), "roc_auc", f"c{index}"
            )
        )
    best = select_best(results)
    assert best.score == max(r.score for r in results)

    champion = train_model(train, schema, best.config)
    clean_auc = evaluate_model(champion, holdout, schema).metrics["roc_auc"]
    assert clean_auc > 0.8

    drifted = generate_transactions(3000, seed=203, concept_drift=1.0)
    drifted_auc = evaluate_model(champion, drifted, schema).metrics["roc_auc"]
    assert drifted_auc < clean_auc - 0.25

    explanation = explain_global(champion, holdout, schema, max_rows=500)
    assert set(explanation.importances) == set(schema.feature_names)

    policy = GatePolicy(min_metric={"roc_auc": 0.7}, bootstrap_rounds=300)
    y_holdout = encode_target(holdout[DEFAULT_TARGET], schema)
    first = gate(policy, y_holdout, predict_scores(champion, holdout, schema), None)
    assert first.passed, first.reason

    # Drift answered by retraining: the challenger learns the new pattern.
    drifted_train = generate_transactions(6000, seed=204, concept_drift=1.0)
    challenger = train_model(drifted_train, schema, best.config)
    y_drifted = encode_target(drifted[DEFAULT_TARGET], schema)
    challenger_scores = predict_scores(challenger, drifted, schema)
    champion_scores = predict_scores(champion, drifted, schema)
    retrained = gate(policy, y_drifted, challenger_scores, champion_scores)
    assert retrained.passed, retrained.reason
    assert retrained.p_value < policy.alpha
    # The old champion does not win its place back against the retrained model.
    assert not gate(policy, y_drifted, champion_scores, challenger_scores).passed
