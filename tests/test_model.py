"""The functional Model: names, lookup, counts, summary, weights I/O, batched prediction and the backward walk.

Gradients through the graph are checked against hand-written expressions here (fan-out adds, Concatenate
splits, a shared layer's parameter gradients sum over its calls); the whole-model finite-difference checks
live in test_gradcheck_layers.py.
"""
import numpy as np
import pytest

import tinynet
from tinynet import Model
from tinynet.layers import (Activation, AvgPool2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                            GlobalAveragePooling2D, Input, LocalResponseNormalization, MaxPool2D, ReLU, Softmax,
                            concatenate, reset_names)
from tinynet.summary import summary_text


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def small_two_output_model():
    """x (6, 6, 3) → conv 3x3 'same' (4) → BN → [maxpool → conv 1x1 (2)] ++ [conv 1x1 (3)] → two heads."""
    x = Input((6, 6, 3))
    y = Conv2D(4, 3, padding="same", activation="relu")(x)
    y = BatchNormalization()(y)
    a = Conv2D(2, 1)(MaxPool2D(3, strides=2, padding="same")(y))
    b = Conv2D(3, 1, strides=2)(y)
    merged = concatenate([a, b])
    out1 = Dense(5, activation="softmax")(GlobalAveragePooling2D()(merged))
    out2 = Dense(2)(Dropout(0.5)(Flatten()(merged)))
    return Model(x, [out1, out2])


# ----------------------------------------------------------------------------------------------- names
def test_automatic_names_are_unique_and_keras_like():
    x = Input((8, 8, 3))
    layers = [Conv2D(2, 3), Conv2D(2, 3), MaxPool2D(), AvgPool2D(), BatchNormalization(), BatchNormalization(),
              Dense(2), Flatten(), Dropout(0.1), ReLU(), Softmax(), Activation("tanh"), GlobalAveragePooling2D(),
              LocalResponseNormalization()]
    assert [layer.name for layer in layers] == [
        "conv2d", "conv2d_1", "max_pooling2d", "average_pooling2d", "batch_normalization",
        "batch_normalization_1", "dense", "flatten", "dropout", "re_lu", "softmax", "activation",
        "global_average_pooling2d", "local_response_normalization"]
    assert concatenate([x, x]).node.layer.name == "concatenate"
    reset_names()
    assert Conv2D(1, 1).name == "conv2d"


def test_explicit_names_and_duplicates_rejected():
    x = Input((4, 4, 1))
    a = Conv2D(1, 1, name="stem")(x)
    b = Conv2D(1, 1, name="stem")(a)
    with pytest.raises(ValueError, match=r"unique.*'stem'"):
        Model(x, b)


def test_get_layer_and_layers_in_run_order():
    model = small_two_output_model()
    names = [layer.name for layer in model.layers]
    assert names[0].startswith("input") and names[1] == "conv2d"
    assert model.get_layer("batch_normalization") is model.layers[2]
    assert names.index("max_pooling2d") < names.index("conv2d_1") < names.index("concatenate")
    with pytest.raises(ValueError, match="no layer named 'nope'.*conv2d"):
        model.get_layer("nope")


# ----------------------------------------------------------------------------------------------- counting
def test_count_params_counts_bn_statistics_as_keras():
    model = small_two_output_model()
    conv = 3 * 3 * 3 * 4 + 4
    bn = 4 * 4                      # gamma, beta, moving mean, moving variance
    proj_a, proj_b = 4 * 2 + 2, 4 * 3 + 3
    dense1, dense2 = 5 * 5 + 5, (3 * 3 * 5) * 2 + 2
    assert model.count_params() == conv + bn + proj_a + proj_b + dense1 + dense2
    assert model.count_trainable_params() == model.count_params() - 2 * 4
    assert model.get_layer("batch_normalization").count_params() == 16


def test_count_macs_is_conv_and_dense_multiply_adds():
    model = small_two_output_model()
    conv = 6 * 6 * 4 * (3 * 3 * 3)
    proj_a, proj_b = 3 * 3 * 2 * 4, 3 * 3 * 3 * 4
    dense1, dense2 = 5 * 5, 45 * 2
    assert model.count_macs() == conv + proj_a + proj_b + dense1 + dense2


def test_summary_lists_names_types_shapes_params_and_mult_adds():
    model = small_two_output_model()
    text = summary_text(model)
    for expected in ["conv2d (Conv2D)", "(None, 6, 6, 4)", "112", "3,888",
                     "batch_normalization", "(BatchNormalization)", "max_pooling2d (MaxPool2D)", "(None, 3, 3, 5)",
                     "dense_1 (Dense)", "(None, 2)", f"Total params: {model.count_params():,}",
                     "Non-trainable params: 8", f"Mult-adds per example: {model.count_macs():,}"]:
        assert expected in text, expected
    printed = []
    model.summary(print_fn=printed.append)
    assert printed == [text]


def test_summary_counts_a_shared_layer_once():
    dense = Dense(3)
    x = Input((3,))
    model = Model(x, dense(dense(x)))
    rows = [line.split() for line in summary_text(model).splitlines() if line.startswith("dense (Dense)")]
    # name, (type), shape (2 words), params, mult-adds, connected to: the second call counts no parameters
    assert len(rows) == 2 and rows[0][4:6] == ["12", "9"] and rows[1][4:6] == ["0", "9"]
    assert rows[0][6] == "input_layer[0][0]" and rows[1][6] == "dense[0][0]"
    assert model.count_params() == 12


# ----------------------------------------------------------------------------------------------- weights I/O
def test_get_set_weights_round_trip(rng):
    a = small_two_output_model()
    b = small_two_output_model()
    x = rng.standard_normal((3, 6, 6, 3))
    a.forward(x, training=True)  # move BN statistics away from their initial values
    assert not all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    b.set_weights(a.get_weights())
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    for ya, yb in zip(a.predict(x), b.predict(x)):
        np.testing.assert_array_equal(ya, yb)


def test_get_weights_returns_copies():
    model = small_two_output_model()
    weights = model.get_weights()
    weights[0][...] = 123.0
    assert not np.any(model.layers[1].weights[0] == 123.0)


def test_layer_get_set_weights(rng):
    layer = Conv2D(2, (3, 1))
    layer(Input((4, 4, 3)))
    kernel, bias = rng.standard_normal((3, 1, 3, 2)), rng.standard_normal(2)
    layer.set_weights([kernel, bias])
    got = layer.get_weights()
    np.testing.assert_allclose(got[0], kernel.astype(np.float32))
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32


def test_save_load_round_trip(tmp_path, rng):
    a = small_two_output_model()
    a.forward(rng.standard_normal((2, 6, 6, 3)), training=True)
    path = tmp_path / "weights.npz"
    a.save_weights(path)
    reset_names()
    b = small_two_output_model()  # same architecture, same automatic names, fresh weights
    b.load_weights(path)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    with np.load(path, allow_pickle=False) as data:
        assert "conv2d/kernel" in data.files and "batch_normalization/moving_variance" in data.files


# ----------------------------------------------------------------------------------------------- running
@pytest.mark.parametrize("n, batch_size", [(7, 3), (4, 32), (1, 1)])
def test_predict_in_batches_equals_call(n, batch_size, rng):
    model = small_two_output_model()
    x = rng.standard_normal((n, 6, 6, 3))
    whole = model(x)
    batched = model.predict(x, batch_size=batch_size)
    assert isinstance(batched, list) and len(batched) == 2
    for u, v in zip(whole, batched):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_single_output_returns_an_array_and_several_a_list(rng):
    x = Input((3,))
    y = Dense(2)(x)
    single, double = Model(x, y), Model(x, [y, Dense(1)(y)])
    data = rng.standard_normal((2, 3))
    assert isinstance(single(data), np.ndarray) and isinstance(single.forward(data), np.ndarray)
    assert isinstance(double(data), list) and len(double.forward(data)) == 2
    assert isinstance(single.backward(np.ones((2, 2), np.float32)), np.ndarray)


def test_training_flag_controls_batchnorm_and_dropout(rng):
    model = small_two_output_model()
    x = rng.standard_normal((4, 6, 6, 3))
    bn = model.get_layer("batch_normalization")
    before = bn.get_weights()
    first = model(x)
    np.testing.assert_array_equal(first[1], model.predict(x)[1])        # inference is deterministic
    for u, v in zip(before, bn.get_weights()):                           # and leaves the statistics alone
        np.testing.assert_array_equal(u, v)
    model.forward(x, training=True)
    assert not np.array_equal(before[2], bn.get_weights()[2])           # moving mean updated


def test_multi_input_model(rng):
    a, b = Input((3,)), Input((2, 2, 1))
    out = concatenate([Dense(2)(a), Flatten()(b)])
    model = Model([a, b], out)
    xa, xb_ = rng.standard_normal((5, 3)), rng.standard_normal((5, 2, 2, 1))
    np.testing.assert_allclose(model.predict([xa, xb_], batch_size=2), model([xa, xb_]), rtol=1e-6)
    model.forward([xa, xb_])
    ga, gb = model.backward(np.ones((5, 6), np.float32))
    assert ga.shape == (5, 3) and gb.shape == (5, 2, 2, 1)
    np.testing.assert_array_equal(gb, np.ones((5, 2, 2, 1)))


# ----------------------------------------------------------------------------------------------- backward walk
def test_fan_out_gradients_add(rng):
    """x feeds two Dense layers and an identity: ∂L/∂x = g1 W1ᵀ + g2 W2ᵀ + g3."""
    tinynet.set_floatx("float64")
    x = Input((4,))
    d1, d2 = Dense(3), Dense(2)
    model = Model(x, [d1(x), d2(x), Activation("linear")(x)])
    data = rng.standard_normal((5, 4))
    g1, g2, g3 = rng.standard_normal((5, 3)), rng.standard_normal((5, 2)), rng.standard_normal((5, 4))
    model.forward(data)
    gx = model.backward([g1, g2, g3])
    np.testing.assert_allclose(gx, g1 @ d1.weights[0].T + g2 @ d2.weights[0].T + g3, rtol=1e-12)
    np.testing.assert_allclose(d1.grads[0], data.T @ g1, rtol=1e-12)
    np.testing.assert_allclose(d2.grads[1], g2.sum(axis=0), rtol=1e-12)


def test_output_without_gradient_contributes_nothing(rng):
    tinynet.set_floatx("float64")
    x = Input((4,))
    d1, d2 = Dense(3), Dense(2)
    model = Model(x, [d1(x), d2(x)])
    model.forward(rng.standard_normal((2, 4)))
    g1 = rng.standard_normal((2, 3))
    gx = model.backward([g1, None])
    np.testing.assert_allclose(gx, g1 @ d1.weights[0].T, rtol=1e-12)
    assert all(np.array_equal(g, np.zeros_like(w)) for g, w in zip(d2.grads, d2.weights))  # zeros, not stale


def test_concatenate_backward_splits_at_channel_offsets(rng):
    a, b, c = Input((2, 2, 1)), Input((2, 2, 3)), Input((2, 2, 2))
    model = Model([a, b, c], concatenate([a, b, c]))
    model.forward([np.zeros((2, 2, 2, k)) for k in (1, 3, 2)])
    g = rng.standard_normal((2, 2, 2, 6)).astype(np.float32)
    ga, gb, gc = model.backward(g)
    np.testing.assert_array_equal(ga, g[..., :1])
    np.testing.assert_array_equal(gb, g[..., 1:4])
    np.testing.assert_array_equal(gc, g[..., 4:])


def test_shared_layer_parameter_gradients_sum_over_calls(rng):
    tinynet.set_floatx("float64")
    a, b = Input((3,)), Input((3,))
    dense = Dense(2)
    model = Model([a, b], [dense(a), dense(b)])
    xa, xb_ = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    ga, gb = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    model.forward([xa, xb_])
    model.backward([ga, gb])
    np.testing.assert_allclose(dense.grads[0], xa.T @ ga + xb_.T @ gb, rtol=1e-12)
    np.testing.assert_allclose(dense.grads[1], ga.sum(0) + gb.sum(0), rtol=1e-12)
    model.forward([xa, xb_])
    model.backward([ga, gb])  # a second backward replaces the gradients, it does not add to them
    np.testing.assert_allclose(dense.grads[0], xa.T @ ga + xb_.T @ gb, rtol=1e-12)


def test_grads_align_with_weights_and_skip_non_trainable(rng):
    model = small_two_output_model()
    outs = model.forward(rng.standard_normal((2, 6, 6, 3)))
    model.backward([np.ones_like(o) for o in outs])
    for layer in model.layers:
        assert len(layer.grads) == len(layer.weights)
        for g, w, trainable in zip(layer.grads, layer.weights, layer.trainable_flags):
            assert (g is None) if not trainable else (g.shape == w.shape)
    assert model.get_layer("batch_normalization").grads[2:] == [None, None]


def test_unused_input_gets_zero_gradient(rng):
    a, b = Input((3,)), Input((2,))
    model = Model([a, b], Dense(1)(a))
    model.forward([rng.standard_normal((2, 3)), rng.standard_normal((2, 2))])
    _, gb = model.backward(np.ones((2, 1), np.float32))
    np.testing.assert_array_equal(gb, np.zeros((2, 2)))
    assert gb.dtype == np.float32


def test_backward_before_forward_raises():
    x = Input((3,))
    with pytest.raises(RuntimeError, match="forward"):
        Model(x, Dense(2)(x)).backward(np.ones((1, 2)))


# ----------------------------------------------------------------------------------------------- public surface
def test_run_returns_a_list_and_call_unpacks_it(rng):
    x = Input((4,))
    one = Model(x, Dense(3)(x))
    many = Model([x], [Dense(2)(x)])
    data = rng.standard_normal((5, 4)).astype(np.float32)
    assert one.single_input and one.single_output and not many.single_input and not many.single_output
    outs = one.run(data)
    assert isinstance(outs, list) and len(outs) == 1 and outs[0].shape == (5, 3)
    np.testing.assert_array_equal(one(data), outs[0])
    assert isinstance(many(data), list) and many.run(np.zeros((0, 4)))[0].shape == (0, 2)
    with pytest.raises(RuntimeError, match="forward"):
        one.backward(np.ones((5, 3), np.float32))   # run keeps no tape


def test_clear_tape_makes_backward_wait_for_the_next_forward(rng):
    x = Input((4,))
    model = Model(x, Dense(3)(x))
    data = rng.standard_normal((2, 4)).astype(np.float32)
    model.forward(data)
    model.clear_tape()
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.ones((2, 3), np.float32))
    model.forward(data)
    assert model.backward(np.ones((2, 3), np.float32)).shape == (2, 4)


def test_device_listeners_move_with_the_model():
    class Listener:
        def __init__(self):
            self.moves = []

        def to(self, device):
            self.moves.append(device)

    x = Input((4,))
    model = Model(x, Dense(3)(x))
    listener = Listener()
    model.add_device_listener(listener)
    model.add_device_listener(listener)        # registered once
    assert model.device_listeners == (listener,)
    model.to("cpu")
    assert listener.moves == ["cpu"]
    with pytest.raises(TypeError, match="to\\(device\\)"):
        model.add_device_listener(object())


# ----------------------------------------------------------------------------------------------- Sequential
def sequential_state(model):
    """What a failed add/pop/build must leave as it was."""
    return ([layer.name for layer in model._stack], model.built, model._input, model._output,
            [layer.name for layer in model.layers])


def test_a_failed_sequential_add_leaves_the_model_as_it_was():
    """The Conv2D that a flat input refuses used to stay in the stack: a later pop() raised (yet removed the
    Dense added since) and the next pop() returned the Conv2D that was never added."""
    from tinynet.layers import ShapeError
    from tinynet.models import Sequential

    model = Sequential([Input((8, 8, 1)), Flatten(name="flat")])
    before = sequential_state(model)
    conv = Conv2D(2, 3, name="refused")
    with pytest.raises(ShapeError, match="layer 'refused' .*input shape \\(None, 64\\)"):
        model.add(conv)
    assert sequential_state(model) == before and not conv.built and conv.weights == []
    dense = Dense(3, name="head")
    model.add(dense)
    assert len(model.layers) == 3 and model.layers[-1] is dense
    assert model.pop() is dense
    assert model.pop().name == "flat"
    with pytest.raises(IndexError, match="no layer to remove"):
        model.pop()
    model.add(Conv2D(2, 3, name="fits"))                                # the input takes a Conv2D directly
    assert model.predict(np.zeros((2, 8, 8, 1))).shape == (2, 6, 6, 2)


def test_a_failed_deferred_build_leaves_the_model_unbuilt_and_says_why_every_time():
    """``_input`` used to be set before the layers were called: the second predict said "has no layers with an
    input yet", hiding the real error. The layers the failed build created weights for are unbuilt again."""
    from tinynet.layers import ShapeError
    from tinynet.models import Sequential

    dense = Dense(4, name="first")
    model = Sequential([dense, Flatten(), Conv2D(2, 3, name="needs_4d")])
    x = np.zeros((8, 8, 8, 1))
    for _ in range(2):
        with pytest.raises(ShapeError, match="layer 'needs_4d'"):
            model.predict(x)
        assert not model.built and model._input is None and model.layers == []
        assert not dense.built and dense.weights == [] and dense.input_shape is None
    model.pop()
    assert model.predict(x).shape == (8, 256)                           # built now, from the data
    assert dense.built and dense.weights[0].shape == (1, 4)


def test_sequential_pop_rebuilds_the_chain():
    from tinynet.models import Sequential

    model = Sequential([Input((4,)), Dense(3, name="a"), Dense(2, name="b")])
    assert model.pop().name == "b"
    assert model.predict(np.zeros((5, 4))).shape == (5, 3) and [layer.name for layer in model.layers][-1] == "a"


# ----------------------------------------------------------------------------------------------- inputs
def test_one_input_tensor_listed_twice_is_refused():
    """Model([x, x], ...) used to be accepted, and predict([X, X * 0]) silently used the second array only."""
    x = Input((4,), name="features")
    with pytest.raises(ValueError, match="inputs must be distinct tensors; \\['features'\\] is listed more than once"):
        Model([x, x], Flatten()(x))


def test_the_same_tensor_may_be_two_outputs():
    """Keras allows it (e.g. two losses on one output); the walk returns it twice and backward adds both."""
    x = Input((4,))
    y = Dense(2, name="head")(x)
    model = Model(x, [y, y])
    xb = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    a, b = model.predict(xb)
    np.testing.assert_array_equal(a, b)
    model.forward(xb)
    g = np.ones((3, 2), np.float32)
    model.backward([g, g])
    np.testing.assert_allclose(model.get_layer("head").grads[1], 2 * g.sum(axis=0))


def test_inputs_may_be_a_dict_by_input_name(rng):
    """As Keras: predict, model(x), run and forward take {input name: array}."""
    a, b = Input((3,), name="a"), Input((2,), name="b")
    model = Model([a, b], Dense(2, name="out")(concatenate([a, b])))
    xa, xb = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    expected = model.predict([xa, xb])
    np.testing.assert_array_equal(model.predict({"b": xb, "a": xa}), expected)
    np.testing.assert_array_equal(model({"a": xa, "b": xb}), expected)
    np.testing.assert_array_equal(model.forward({"a": xa, "b": xb}, training=False), expected)
    single = Model(a, Dense(2)(a))
    np.testing.assert_array_equal(single.predict({"a": xa}), single.predict(xa))
