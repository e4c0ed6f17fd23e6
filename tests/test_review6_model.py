"""Review 6, building models and layers: defects a Keras user meets when building graphs (each test failed before
its fix). Small shapes only."""
import numpy as np
import pytest

from tinynet import Model
from tinynet.layers import Activation, BatchNormalization, Dense, Input, Layer, ShapeError
from tinynet.models import Sequential


# ------------------------------------------------------------------ a failed build leaves nothing behind
class _FailsHalfway(Layer):
    """Adds its kernel, then refuses more than 3 features (as an allocation failing after the kernel would)."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)

    def build(self, input_shape):
        self.add_weight("kernel", np.ones((input_shape[-1], 2)))
        if input_shape[-1] > 3:
            raise ValueError("too many features")
        self.add_weight("bias", np.zeros(2))


def test_a_build_that_fails_halfway_adds_no_weight():
    layer = _FailsHalfway()
    with pytest.raises(ValueError, match="too many features"):
        layer(Input((5,)))
    assert not layer.built and layer.weights == [] and layer.weight_names == [] and layer.grads == []
    layer(Input((2,)))  # a second call builds it as if the first had never happened
    assert [w.shape for w in layer.weights] == [(2, 2), (2,)]
    assert layer.weight_names == ["kernel", "bias"]


def test_a_failed_eager_build_adds_no_weight_either():
    layer = _FailsHalfway()
    with pytest.raises(ValueError, match="too many features"):
        layer(np.ones((1, 4), np.float32))
    assert layer.weights == [] and not layer.built


# ------------------------------------------------------------------ BatchNormalization(axis=1) reused
def test_batch_norm_on_axis_1_takes_another_last_axis_when_reused_as_keras():
    bn = BatchNormalization(axis=1)
    bn(Input((4, 3)))
    assert bn(Input((4, 5))).shape == (None, 4, 5)  # its weights fix axis 1 (4), not the last axis
    assert bn(np.ones((2, 4, 5), np.float32)).shape == (2, 4, 5)  # as the eager call already did
    with pytest.raises(ShapeError, match="expected 4 features on axis 1"):
        bn(Input((6, 3)))


# ------------------------------------------------------------------ softmax across the batch
def test_activation_softmax_on_a_1d_input_is_refused_when_built():
    x = Input(())
    with pytest.raises(ShapeError, match=r"activation.*batch axis.*\(None,\)"):
        Activation("softmax")(x)
    with pytest.raises(ShapeError, match="batch axis"):
        Activation("softmax")(np.array([1.0, 2.0, 3.0]))
    assert Activation("tanh")(x).shape == (None,)  # element-wise activations still take it
    assert Activation("softmax")(Input((1,))).shape == (None, 1)


# ------------------------------------------------------------------ an InputLayer called on a tensor
def test_an_input_layer_called_on_a_tensor_is_refused_there():
    x = Input((3,))
    input_layer = x.node.layer
    with pytest.raises(TypeError, match="input_layer.*InputLayer.*not called on tensors"):
        input_layer(Dense(3)(x))
    with pytest.raises(ShapeError, match=r"expected inputs of shape \(None, 3\)"):
        input_layer(np.ones((2, 5), np.float32))
    assert input_layer(np.ones((2, 3), np.float32)).shape == (2, 3)


# ------------------------------------------------------------------ get_layer as Keras
def test_get_layer_by_index_as_keras():
    x = Input((3,))
    model = Model(x, Dense(2, name="head")(x))
    assert model.get_layer(index=0) is model.layers[0]
    assert model.get_layer(index=-1).name == "head"
    assert model.get_layer("head") is model.get_layer(name="head")
    with pytest.raises(ValueError, match="out of range"):
        model.get_layer(index=2)
    with pytest.raises(TypeError, match="index must be an integer"):
        model.get_layer(index=True)
    with pytest.raises(ValueError, match="name or an index"):
        model.get_layer()
    with pytest.raises(ValueError, match="name or an index"):
        model.get_layer("head", index=0)


# ------------------------------------------------------------------ set_weights(None)
def test_set_weights_of_none_or_a_dict_names_the_model_and_changes_nothing():
    x = Input((3,))
    model = Model(x, Dense(2, name="head")(x))
    before = model.get_weights()
    with pytest.raises(TypeError, match="Model 'model': set_weights takes a list of arrays.*NoneType"):
        model.set_weights(None)
    with pytest.raises(TypeError, match="Model 'model'.*dict"):
        model.set_weights({"head/kernel": before[0]})
    with pytest.raises(TypeError, match="layer 'head': set_weights takes a list of arrays"):
        model.get_layer("head").set_weights(None)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


# ------------------------------------------------------------------ Sequential built from one row
def test_sequential_without_input_builds_from_a_one_row_list_as_from_two_rows():
    one = Sequential([Dense(2)])
    assert one.predict([[1.0, 2.0, 3.0]]).shape == (1, 2)
    assert one.inputs[0].shape == (None, 3)
    two = Sequential([Dense(2)])
    assert two.predict([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).shape == (2, 2)
    assert Sequential([Dense(2)])([np.ones((2, 3))]).shape == (2, 2)  # [array]: the list of the one input


# ------------------------------------------------------------------ Flatten's size in Python integers
def test_flatten_of_a_huge_input_does_not_wrap_to_a_wrong_size():
    from tinynet.layers import Flatten

    assert Flatten()(Input((2**32, 2**32))).shape == (None, 2**64)  # was (None, 0): int64 wrapped


# ------------------------------------------------------------------ eager calls on an empty feature axis
@pytest.mark.parametrize("make, shape", [
    (lambda: __import__("tinynet").layers.Conv2D(2, 1), (1, 2, 2, 0)),
    (lambda: __import__("tinynet").layers.GlobalAveragePooling2D(), (1, 0, 2, 2)),
    (lambda: Dense(2), (2, 0)),
])
def test_an_eager_call_on_an_empty_feature_axis_is_refused_naming_the_layer(make, shape):
    layer = make()
    with pytest.raises(ShapeError, match=rf"layer '{layer.name}'.*per-example size must be >= 1"):
        layer(np.ones(shape, np.float32))
    assert not layer.built and layer.weights == []
    assert layer(np.ones((0,) + (2,) * (len(shape) - 1), np.float32)).shape[0] == 0  # an empty batch still runs



# ------------------------------------------------------------------ a deep chain
def test_a_chain_deeper_than_the_recursion_limit_builds_and_runs():
    import sys

    x = Input((3,))
    y = x
    for _ in range(sys.getrecursionlimit() + 200):  # was RecursionError in Model's graph walk
        y = Activation("relu")(y)
    model = Model(x, y)
    assert len(model.layers) == sys.getrecursionlimit() + 201
    assert [node.layer for node in model.nodes] == model.layers  # each after its input
    np.testing.assert_array_equal(model.predict(np.array([[1.0, -1.0, 2.0]])), [[1.0, 0.0, 2.0]])


def test_graph_order_is_unchanged_for_branches():
    from tinynet.layers import concatenate

    a, b = Input((2,), name="a"), Input((2,), name="b")
    left = Dense(2, name="left")(b)
    right = Dense(2, name="right")(a)
    out = Dense(1, name="out")(concatenate([left, right], name="cat"))
    model = Model([a, b], out)
    assert [layer.name for layer in model.layers] == ["a", "b", "left", "right", "cat", "out"]
    with pytest.raises(ValueError, match="layer names must be unique, repeated: \\['left'\\]"):
        Model([a, b], Dense(1, name="left")(out))


def test_summary_takes_a_numpy_integer_line_length():
    from tinynet.summary import summary_text

    x = Input((3,))
    model = Model(x, Dense(2)(x))
    assert summary_text(model, line_length=np.int64(60)) == summary_text(model, line_length=60)
    with pytest.raises(TypeError, match="line_length must be an integer"):
        summary_text(model, line_length=np.bool_(True))


# ------------------------------------------------------------------ Sequential.build on a built model
def test_sequential_build_for_another_shape_is_refused_as_keras():
    model = Sequential([Input((3,)), Dense(2)])
    with pytest.raises(ValueError, match=r"already takes inputs of shape \(None, 3\).*\(None, 5\)"):
        model.build((None, 5))  # was silently ignored: the model still took (3,)
    assert model.build((None, 3)) is model and model.build((3,)) is model and model.build() is model
    assert model.inputs[0].shape == (None, 3)
