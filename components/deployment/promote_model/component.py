"""Make a registered version the champion (run only after a passed gate)."""

from kfp import dsl

from closedloop.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote_model(registry_uri: str, model_name: str, version: str, reason: str) -> str:
    """Move the champion pointer to *version* and record the move.

    Model servers serving ``champion`` pick the new version up without a restart.

    Args:
        registry_uri: The model registry (``s3://bucket/prefix`` or a local directory).
        model_name: Registered model name.
        version: The version to promote.
        reason: Why (the gate's reason), kept in the pointer and its history.

    Returns:
        The previous champion's version ("" if there was none).
    """
    from closedloop.registry import Registry
    from closedloop.storage import Store

    pointer = Registry(Store(), registry_uri).promote(model_name, version, reason)
    print(f"{model_name}: champion {pointer.previous or '(none)'} -> {pointer.version}")
    return pointer.previous or ""
