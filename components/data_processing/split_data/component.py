"""Split rows into a training set and a holdout the gate judges on (never trained on)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def split_data(
    dataset: Input[Dataset],
    target: str,
    train: Output[Dataset],
    holdout: Output[Dataset],
    strategy: str = "stratified",
    test_size: float = 0.2,
    time_column: str = "",
    seed: int = 0,
):
    """Split stratified by label, by time, or by row order with the latest rows held out.

    Args:
        dataset: Cleaned rows.
        target: Name of the label column.
        train: Rows to fit on.
        holdout: Disjoint rows for evaluation and the gate.
        strategy: ``stratified`` (shuffled, class shares kept), ``time`` (sorted by
            ``time_column``, the latest held out) or ``ordered`` (the last rows as they
            stand are held out, no shuffling: for data already in time order, such as
            ``assemble_training_data`` writes).
        test_size: Share of rows held out.
        time_column: The ordering column for ``time``.
        seed: Shuffle seed for ``stratified``.
    """
    from closedloop.components._runtime import read_frame, write_frame

    from closedloop.ml.split import split_dataset

    fit_rows, held = split_dataset(
        read_frame(dataset.path),
        target,
        test_size=test_size,
        strategy=strategy,  # type: ignore[arg-type]
        time_column=time_column or None,
        seed=seed,
    )
    write_frame(fit_rows, train)
    write_frame(held, holdout)
    for out in (train, holdout):
        out.metadata["source"] = dataset.metadata.get("source", "")
        out.metadata["sha256"] = dataset.metadata.get("sha256", "")
