"""Explain a model globally: which input columns drive its predictions."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def explain_model(
    model: Input[Model],
    holdout: Input[Dataset],
    schema: Input[Artifact],
    explanation: Output[Artifact],
    summary: Output[Markdown],
    chart: Output[HTML],
    max_rows: int = 2000,
    seed: int = 0,
):
    """Compute feature attributions (XGBoost SHAP contributions, else permutation importance).

    Args:
        model: The fitted pipeline.
        holdout: Rows to explain on.
        schema: The input schema.
        explanation: Importances per input column as JSON (stored with the model).
        summary: The ranking as Markdown.
        chart: A bar chart of the importances.
        max_rows: Rows sampled for the explanation.
        seed: Sampling seed.
    """
    from closedloop.components._runtime import (
        load_joblib,
        read_frame,
        read_schema,
        write_json,
        write_text,
    )

    from closedloop.ml.explain import explain_global

    result = explain_global(
        load_joblib(model.path),
        read_frame(holdout.path),
        read_schema(schema.path),
        max_rows=max_rows,
        seed=seed,
    )
    write_json(result.to_dict(), explanation)
    write_text(result.to_markdown(), summary)
    write_text(result.to_html(), chart)
    explanation.metadata["method"] = result.method
    explanation.metadata["top"] = list(result.importances)[:5]
