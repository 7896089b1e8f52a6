"""Fit the feature transformer on the training rows; it becomes part of the served model."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def engineer_features(
    train: Input[Dataset],
    schema: Input[Artifact],
    features: Output[Model],
    engineer: bool = True,
):
    """Fit :class:`closedloop.ml.features.TabularFeatures` (an sklearn transformer).

    Args:
        train: Training rows.
        schema: The input schema.
        features: The fitted transformer (joblib); training and serving use this object.
        engineer: Add engineered features (date parts, log amounts) on top of the encoding.
    """
    from closedloop.components._runtime import read_frame, read_schema, save_joblib

    from closedloop.ml.features import make_features
    from closedloop.ml.train import feature_frame

    spec = read_schema(schema.path)
    fitted = make_features(spec, engineer=engineer).fit(feature_frame(read_frame(train.path), spec))
    save_joblib(fitted, features)
    features.metadata["engineer"] = engineer
    features.metadata["outputs"] = len(fitted.get_feature_names_out())
