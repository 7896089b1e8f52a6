"""Fit the drift detector on a reference sample of the model's raw input features."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def fit_drift_detector(
    train: Input[Dataset],
    schema: Input[Artifact],
    detector: Output[Artifact],
    reference: Output[Dataset],
    p_value: float = 0.05,
    max_reference_rows: int = 5000,
    seed: int = 0,
):
    """Fit an alibi-detect TabularDrift (KS for numeric, chi-squared for categorical features).

    Args:
        train: Training rows; the reference sample is drawn from them.
        schema: The served input schema, with the fitted cleaning (``clean_data``'s
            ``fitted_schema``).
        detector: The saved detector directory (alibi-detect ``save_detector`` + encoder).
        reference: The raw reference sample as Parquet.
        p_value: Significance level of the feature-wise tests.
        max_reference_rows: Size of the reference sample.
        seed: Sampling seed.
    """
    from closedloop.components._runtime import read_frame, read_schema, write_frame

    from closedloop.drift.detector import fit_detector, save_detector_dir

    fitted = fit_detector(
        read_frame(train.path),
        read_schema(schema.path),
        p_val=p_value,
        max_reference_rows=max_reference_rows,
        seed=seed,
    )
    save_detector_dir(fitted, detector.path)
    write_frame(fitted.reference, reference)
    detector.metadata["p_value"] = p_value
    detector.metadata["reference_rows"] = len(fitted.reference)
