"""Compare the holdout metrics of two pipeline branches side by side."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def compare_evaluations(
    baseline: Input[Artifact],
    variant: Input[Artifact],
    comparison: Output[Markdown],
    baseline_name: str = "baseline",
    variant_name: str = "variant",
) -> str:
    """Write a table of every metric of both branches and their difference.

    Args:
        baseline: Evaluation JSON of the first branch (from ``evaluate_model``).
        variant: Evaluation JSON of the second branch.
        comparison: The side-by-side table as Markdown.
        baseline_name: Label of the first branch.
        variant_name: Label of the second branch.

    Returns:
        The comparison as JSON: metric -> {baseline, variant, difference}.
    """
    import json
    from pathlib import Path

    from closedloop.components._runtime import write_text

    first = json.loads(Path(baseline.path).read_text())["metrics"]
    second = json.loads(Path(variant.path).read_text())["metrics"]
    table = {
        m: {"baseline": first[m], "variant": second[m], "difference": second[m] - first[m]}
        for m in sorted(first)
        if m in second
    }
    lines = [f"| metric | {baseline_name} | {variant_name} | difference |", "|---|---|---|---|"]
    lines += [
        f"| {m} | {v['baseline']:.4f} | {v['variant']:.4f} | {v['difference']:+.4f} |"
        for m, v in table.items()
    ]
    write_text(f"# {baseline_name} vs {variant_name}\n\n" + "\n".join(lines) + "\n", comparison)
    return json.dumps(table, sort_keys=True)
