import numpy as np
import pytest

from closedloop.ml.gate import GateDecision, GatePolicy, gate


@pytest.fixture(scope="module")
def holdout() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 2000
    y = (rng.random(n) < 0.2).astype(int)
    signal = y + rng.normal(0, 0.6, n)
    good = 1 / (1 + np.exp(-3 * (signal - 0.5)))
    weak = 1 / (1 + np.exp(-(y + rng.normal(0, 2.0, n))))
    return {"y": y, "good": good, "weak": weak, "random": rng.random(n)}


def test_worse_challenger_is_rejected(holdout):
    decision = gate(GatePolicy(min_metric={}), holdout["y"], holdout["weak"], holdout["good"])
    assert not decision.passed
    assert decision.improvement < 0
    assert decision.p_value is None
    assert "does not exceed" in decision.reason


def test_much_better_challenger_is_accepted(holdout):
    decision = gate(
        GatePolicy(min_metric={"roc_auc": 0.6}), holdout["y"], holdout["good"], holdout["weak"]
    )
    assert decision.passed, decision.reason
    assert decision.challenger_metric > decision.champion_metric + 0.1
    assert decision.improvement == pytest.approx(
        decision.challenger_metric - decision.champion_metric
    )
    assert decision.p_value < 0.05


def test_thresholds_are_checked_first(holdout):
    policy = GatePolicy(min_metric={"roc_auc": 0.7, "recall": 0.99})
    decision = gate(policy, holdout["y"], holdout["good"], None)
    assert not decision.passed
    assert "recall" in decision.reason and "below the required minimum" in decision.reason
    assert decision.alerts == ()
    ceiling = GatePolicy(min_metric={"log_loss": 0.05}, primary_metric="log_loss")
    decision = gate(ceiling, holdout["y"], holdout["good"], None)
    assert not decision.passed and "above the allowed maximum" in decision.reason


def test_first_model_policy(holdout):
    accept = gate(GatePolicy(), holdout["y"], holdout["good"], None)
    assert accept.passed and accept.champion_metric is None
    reject = gate(GatePolicy(first_model="reject"), holdout["y"], holdout["good"], None)
    assert not reject.passed and "no champion" in reject.reason
    too_weak = gate(GatePolicy(min_metric={"roc_auc": 0.99}), holdout["y"], holdout["good"], None)
    assert not too_weak.passed


def test_equal_or_marginally_better_challenger_is_rejected(holdout):
    y, good = holdout["y"], holdout["good"]
    same = gate(GatePolicy(), y, good, good)
    assert not same.passed and same.improvement == 0.0
    # Lift one positive above every other score: a real but negligible improvement.
    nudged = good.copy()
    lowest_positive = np.flatnonzero(y == 1)[np.argmin(good[y == 1])]
    nudged[lowest_positive] = 1.0
    marginal = gate(GatePolicy(), y, nudged, good)
    assert marginal.improvement > 0
    assert not marginal.passed
    assert marginal.p_value >= 0.05
    assert "not significant" in marginal.reason


def test_min_improvement_and_lower_is_better_metrics(holdout):
    y = holdout["y"]
    policy = GatePolicy(min_metric={}, min_improvement=0.5)
    assert not gate(policy, y, holdout["good"], holdout["weak"]).passed
    log_loss_policy = GatePolicy(min_metric={}, primary_metric="log_loss")
    decision = gate(log_loss_policy, y, holdout["good"], holdout["weak"])
    assert decision.passed
    assert decision.challenger_metric < decision.champion_metric
    assert decision.improvement > 0


def test_bootstrap_is_seeded(holdout):
    args = (holdout["y"], holdout["good"], holdout["weak"])
    policy = GatePolicy(min_metric={}, bootstrap_rounds=50, seed=3)
    assert gate(policy, *args).p_value == gate(policy, *args).p_value


def test_policy_validation_and_outputs(holdout):
    with pytest.raises(ValueError, match="unknown metrics"):
        GatePolicy(primary_metric="auc")
    with pytest.raises(ValueError, match="alpha"):
        GatePolicy(alpha=1.5)
    with pytest.raises(ValueError, match="same number of rows"):
        gate(GatePolicy(), holdout["y"], holdout["good"][:10], None)
    policy = GatePolicy(min_metric={"roc_auc": 0.6, "accuracy": 0.5})
    assert GatePolicy.from_dict(policy.to_dict()) == policy
    decision = gate(policy, holdout["y"], holdout["good"], holdout["weak"])
    markdown = decision.to_markdown()
    assert markdown.startswith("**Gate: PASSED**")
    assert "challenger accuracy" in markdown and "p-value" in markdown
    assert isinstance(decision, GateDecision)
    assert decision.to_dict()["passed"] is True


def test_a_floor_the_champion_misses_too_is_an_alert_not_a_blocker(holdout):
    y, good, weak = holdout["y"], holdout["good"], holdout["weak"]
    policy = GatePolicy(min_metric={"roc_auc": 0.99})
    champion_auc = gate(GatePolicy(min_metric={}), y, weak, None).challenger_metric
    assert champion_auc < 0.99
    decision = gate(policy, y, good, weak)
    assert decision.challenger_metric < 0.99  # the challenger misses the floor too ...
    assert decision.passed, decision.reason  # ... but it is significantly better
    assert decision.p_value < policy.alpha
    (alert,) = decision.alerts
    assert "roc_auc" in alert and "champion misses it too" in alert
    assert f"{champion_auc:.4f}" in alert
    assert decision.to_dict()["alerts"] == [alert]
    assert "**Alerts**" in decision.to_markdown() and alert in decision.to_markdown()


def test_an_alert_does_not_waive_the_champion_comparison(holdout):
    y, weak = holdout["y"], holdout["weak"]
    # Both below the floor and no better than the champion: still rejected, with the alert.
    decision = gate(GatePolicy(min_metric={"roc_auc": 0.99}), y, weak, weak)
    assert not decision.passed
    assert "does not exceed" in decision.reason
    assert len(decision.alerts) == 1


def test_a_floor_the_champion_meets_still_blocks(holdout):
    y, good, weak = holdout["y"], holdout["good"], holdout["weak"]
    policy = GatePolicy(min_metric={"roc_auc": 0.8})
    assert gate(GatePolicy(min_metric={}), y, good, None).challenger_metric >= 0.8
    decision = gate(policy, y, weak, good)
    assert not decision.passed
    assert "below the required minimum 0.8000" in decision.reason
    assert "which the champion meets" in decision.reason
    assert decision.alerts == ()
    assert decision.p_value is None
