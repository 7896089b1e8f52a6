"""Keep the best candidate of the parallel tuning loop."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def select_best_candidate(results: list, leaderboard: Output[Markdown]) -> str:
    """Pick the highest validation score (ties broken deterministically).

    Args:
        results: Candidate results (JSON strings) collected from ``train_candidate``.
        leaderboard: Every candidate's score, best first, as a Markdown table.

    Returns:
        The winning configuration as JSON.
    """
    import json

    from closedloop.components._runtime import write_text

    from closedloop.ml.tune import CandidateResult, select_best

    parsed = [CandidateResult.from_dict(json.loads(r)) for r in results]
    best = select_best(parsed)
    rows = sorted(parsed, key=lambda r: -r.score)
    lines = ["| rank | model | score | params |", "|---|---|---|---|"]
    lines += [
        f"| {i} | {r.config.kind} | {r.score:.4f} | `{json.dumps(dict(r.config.params), sort_keys=True)}` |"
        for i, r in enumerate(rows, 1)
    ]
    write_text(
        f"# Candidates ({best.metric}, higher is better)\n\n" + "\n".join(lines) + "\n", leaderboard
    )
    return json.dumps(best.config.to_dict(), sort_keys=True)
