"""A loaded version's signatures: the flat call the server uses equals TensorFlow's own call."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from serving_models import export_examples_model, export_toy, toy_expected, toy_request_inputs

from serving.servable import Servable


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("servable")
    toy = Servable.load("toy", 1, export_toy(root / "toy", 1, offset=3.0))
    examples = Servable.load("examples", 1, export_examples_model(root / "examples", 1))
    return toy, examples


def _public(signature, inputs):
    results = signature.function(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in results.items()}


def test_toy_signatures_take_the_flat_call_and_match_the_public_call(models):
    toy, _ = models
    signature = toy.signature(None)
    assert signature.flat_call is not None
    inputs = toy_request_inputs(5)
    got = signature.run(inputs)
    expected = _public(signature, inputs)
    np.testing.assert_array_equal(got["y"], expected["y"])
    np.testing.assert_allclose(got["y"], toy_expected(inputs, 3.0)["y"])
    assert list(got["tagged"]) == list(expected["tagged"])
    pair = {"pair": np.arange(6, dtype=np.float32).reshape(3, 2)}
    np.testing.assert_allclose(toy.signature("total").run(pair)["sum"], [1.0, 5.0, 9.0])


def test_tf1_signatures_match_the_public_call(models):
    _, examples = models
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(1.5)
    batch = np.array([example.SerializeToString()] * 2, dtype=object)
    for name in ("regress_x", "classify_x", "serving_default"):
        signature = examples.signature(name)
        key = next(iter(signature.inputs))
        got = signature.run({key: batch})
        expected = _public(signature, {key: batch})
        assert set(got) == set(expected)
        for output in got:
            np.testing.assert_array_equal(got[output], expected[output])
    regress = examples.signature("regress_x").run({"inputs": batch})["outputs"]
    np.testing.assert_allclose(regress.ravel(), [4.0, 4.0])


def test_a_wrong_dtype_reaching_the_model_is_invalid_argument(models):
    toy, _ = models
    from serving.errors import ServingError

    bad = {**toy_request_inputs(2), "count": np.array([b"a", b"b"], dtype=object)}
    with pytest.raises(ServingError) as info:
        toy.signature(None).run(bad)
    assert info.value.code.name == "INVALID_ARGUMENT"
