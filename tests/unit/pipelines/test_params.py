"""Typed pipeline arguments from command-line strings."""

from __future__ import annotations

import pytest
from closedloop.pipelines.params import ParameterError, coerce, types_of_function, types_of_package
from closedloop.pipelines.registry import UnknownPipelineError, get, pipelines

TYPES = {"n": "NUMBER_INTEGER", "x": "NUMBER_DOUBLE", "flag": "BOOLEAN", "name": "STRING"}


def test_strings_become_the_declared_types() -> None:
    out = coerce({"n": "3", "x": "0.5", "flag": "yes", "name": "fraud"}, TYPES)
    assert out == {"n": 3, "x": 0.5, "flag": True, "name": "fraud"}
    assert isinstance(out["n"], int) and isinstance(out["x"], float)


def test_typed_values_pass_through_and_ints_widen_to_float() -> None:
    out = coerce({"n": 4, "x": 2, "flag": False}, TYPES)
    assert out == {"n": 4, "x": 2.0, "flag": False} and isinstance(out["x"], float)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"n": "three"}, "n='three': the pipeline expects integer"),
        ({"x": "fast"}, "expects number"),
        ({"flag": "maybe"}, "expects true or false"),
        ({"bogus": "1"}, "has no parameter 'bogus'"),
    ],
)
def test_bad_values_name_the_parameter(args: dict[str, str], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        coerce(args, TYPES)


def test_function_and_compiled_package_agree_on_every_pipeline() -> None:
    from pathlib import Path

    compiled = Path(__file__).resolve().parents[3] / "pipelines" / "compiled"
    sdk_to_ir = {
        "String": "STRING",
        "Integer": "NUMBER_INTEGER",
        "Float": "NUMBER_DOUBLE",
        "Boolean": "BOOLEAN",
    }
    for name, func in pipelines().items():
        from_function = {k: sdk_to_ir[v] for k, v in types_of_function(func).items()}
        assert from_function == types_of_package(compiled / f"{name}.yaml"), name


def test_unknown_pipeline_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPipelineError, match=r"choose one of .*training"):
        get("nope")


def test_inference_is_an_alias_of_batch_inference() -> None:
    assert get("inference") is get("batch-inference")
