"""Bad input fails early with a message that names the layer and the shapes involved."""
import re

import numpy as np
import pytest

from tinynet import Model, losses
from tinynet.layers import (AvgPool2D, BatchNormalization, Concatenate, Conv2D, Dense, Dropout, Flatten,
                            GlobalAveragePooling2D, Input, MaxPool2D, ShapeError, Softmax, concatenate)


def esc(text):
    return re.escape(text)


# ----------------------------------------------------------------------------------------------- graph building
@pytest.mark.parametrize("make, type_name", [
    (lambda: Conv2D(2, 3, name="c"), "Conv2D"),
    (lambda: MaxPool2D(2, name="c"), "MaxPool2D"),
    (lambda: AvgPool2D(2, name="c"), "AvgPool2D"),
    (lambda: GlobalAveragePooling2D(name="c"), "GlobalAveragePooling2D"),
])
@pytest.mark.parametrize("shape", [(5, 5), (5,), (2, 5, 5, 3)])
def test_wrong_rank_names_layer_and_shape(make, type_name, shape):
    with pytest.raises(ShapeError, match=esc(f"layer 'c' ({type_name}): expected a 4-D input")
                       + ".*" + esc(f"got {len(shape) + 1}-D; input shape {(None,) + shape}")):
        make()(Input(shape))


@pytest.mark.parametrize("make, first, second, expected", [
    (lambda: Conv2D(2, 3, name="c"), (5, 5, 3), (5, 5, 4), "built for (None, 5, 5, 3)"),
    (lambda: Conv2D(2, 1, name="c"), (5, 5, 3), (7, 7, 1), "built for (None, 5, 5, 3)"),
    (lambda: Dense(2, name="c"), (3,), (4,), "expected 3 input features"),
    (lambda: Dense(2, name="c"), (2, 2, 3), (2, 2, 5), "expected 3 input features"),
    (lambda: BatchNormalization(name="c"), (4, 4, 3), (4, 4, 2), "expected 3 features"),
])
def test_reusing_a_built_layer_with_another_channel_count(make, first, second, expected):
    layer = make()
    layer(Input(first))
    with pytest.raises(ShapeError, match=esc("layer 'c'") + ".*" + esc(expected) + ".*"
                       + esc(f"input shape {(None,) + second}")):
        layer(Input(second))


def test_reusing_a_conv_on_another_spatial_size_is_fine():
    layer = Conv2D(2, 3, name="c")
    layer(Input((5, 5, 3)))
    assert layer(Input((9, 7, 3))).shape == (None, 7, 5, 2)


def test_eager_forward_with_wrong_channels():
    layer = Conv2D(2, 3, name="c")
    layer(Input((5, 5, 3)))
    with pytest.raises(ShapeError, match=esc("layer 'c' (Conv2D): expected 3 input channels; input shape "
                                             "(None, 5, 5, 4)")):
        layer.forward(np.zeros((1, 5, 5, 4), np.float32))
    dense = Dense(2, name="d")
    dense(Input((3,)))
    with pytest.raises(ShapeError, match=esc("layer 'd' (Dense): expected 3 input features")):
        dense.forward(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("shapes, axis, message", [
    ([(4, 4, 2), (5, 4, 2)], -1, "shapes must match except on the concatenation axis -1"),
    ([(4, 4, 2), (4, 3, 2)], -1, "shapes must match except on the concatenation axis -1"),
    ([(4, 4, 2), (4, 4, 2, 1)], -1, "inputs have different ranks"),
    ([(4, 4, 2), (4, 4, 3)], 1, "shapes must match except on the concatenation axis 1"),
])
def test_concat_shapes_that_do_not_match(shapes, axis, message):
    tensors = [Input(s) for s in shapes]
    listed = ", ".join(str((None,) + s) for s in shapes)
    with pytest.raises(ShapeError, match=esc(f"layer 'cat' (Concatenate): {message}") + ".*" + esc(listed)):
        concatenate(tensors, axis=axis, name="cat")


def test_concat_needs_a_list_of_two():
    x = Input((2, 2, 1))
    with pytest.raises(TypeError, match=esc("layer 'cat' (Concatenate): takes a list")):
        Concatenate(name="cat")(x)
    with pytest.raises(ShapeError, match="'cat'.*at least two"):
        Concatenate(name="cat")([x])


@pytest.mark.parametrize("make, shape, window", [
    (lambda: Conv2D(2, 5, name="w"), (3, 3, 1), "5x5"),
    (lambda: Conv2D(2, (2, 6), name="w"), (4, 5, 1), "2x6"),
    (lambda: Conv2D(2, (6, 2), name="w"), (5, 4, 1), "6x2"),
    (lambda: MaxPool2D(4, name="w"), (3, 8, 2), "4x4"),
    (lambda: AvgPool2D((5, 5), strides=3, name="w"), (4, 4, 8), "5x5"),
])
def test_window_larger_than_padded_input(make, shape, window):
    h, w = shape[:2]
    with pytest.raises(ShapeError, match=esc("layer 'w'") + ".*" + esc(f"window {window} is larger than the "
                                                                         f"valid-padded input {h}x{w}")
                       + ".*" + esc(str((None,) + shape))):
        make()(Input(shape))


def test_same_padding_accepts_a_window_larger_than_the_input():
    assert Conv2D(2, 7, padding="same")(Input((3, 3, 1))).shape == (None, 3, 3, 2)


def test_one_input_layer_given_a_list():
    x = Input((3,))
    with pytest.raises(TypeError, match=esc("layer 'd' (Dense): takes one input, got a list of 2")):
        Dense(2, name="d")([x, x])


def test_softmax_on_the_batch_axis():
    with pytest.raises(ShapeError, match="'s'.*axis 0 is not a feature axis"):
        Softmax(axis=0, name="s")(Input((3,)))


# ----------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(2, 3, padding="full", name="x"),
     "layer 'x' (Conv2D): padding must be 'valid' or 'same', got 'full'"),
    (lambda: Conv2D(2, 0, name="x"), "layer 'x' (Conv2D): kernel_size must be >= 1"),
    (lambda: Conv2D(2, (1, 2, 3), name="x"), "layer 'x' (Conv2D): kernel_size must be an int or a pair"),
    (lambda: Conv2D(0, 3, name="x"), "layer 'x' (Conv2D): filters must be an integer >= 1"),
    (lambda: MaxPool2D(2, strides=0, name="x"), "layer 'x' (MaxPool2D): strides must be >= 1"),
    (lambda: Dense(2, activation="swish9", name="x"), "layer 'x' (Dense): unknown activation 'swish9'"),
    (lambda: Dense(0, name="x"), "layer 'x' (Dense): units must be an integer >= 1"),
    (lambda: Dropout(1.0, name="x"), "layer 'x' (Dropout): rate must be a number in [0, 1)"),
])
def test_bad_arguments_name_the_layer(make, message):
    with pytest.raises(ValueError, match=esc(message)):
        make()


# ----------------------------------------------------------------------------------------------- running a model
def tiny_model():
    x = Input((4, 4, 2))
    return Model(x, Dense(3, name="head")(Flatten()(Conv2D(2, 3, name="conv")(x))))


def test_model_input_of_the_wrong_shape():
    model = tiny_model()
    with pytest.raises(ShapeError, match=esc("expects shape (None, 4, 4, 2), got (3, 4, 4, 3)")):
        model.predict(np.zeros((3, 4, 4, 3)))


def test_model_gradient_of_the_wrong_shape():
    model = tiny_model()
    model.forward(np.zeros((2, 4, 4, 2)))
    with pytest.raises(ShapeError, match=esc("output 'head' has shape (2, 4), expected (2, 3)")):
        model.backward(np.zeros((2, 4), np.float32))


def test_disconnected_graph():
    a, b = Input((3,), name="in_a"), Input((3,), name="in_b")
    with pytest.raises(ValueError, match="disconnected.*'in_b'"):
        Model(a, concatenate([a, b]))


# ----------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.categorical_crossentropy])
@pytest.mark.parametrize("labels, low, high", [([0, 3], 0, 3), ([-1, 2], -1, 2), ([[0, 1], [2, 7]], 0, 7)])
def test_labels_out_of_range(loss, labels, low, high):
    scores = np.full((2, 3), 1 / 3, np.float32) if np.ndim(labels) == 1 else np.full((2, 2, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match=esc(f"labels must lie in [0, 3) for scores of shape {scores.shape}; "
                                             f"got values in [{low}, {high}]")):
        loss(scores, np.array(labels))


def test_labels_of_a_shape_that_does_not_fit():
    with pytest.raises(ValueError, match=esc("labels of shape (3,) do not fit scores of shape (2, 3)")):
        losses.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 1, 2]))


def test_float_labels_that_are_not_one_hot_shaped():
    with pytest.raises(ValueError, match="integer class ids or one-hot"):
        losses.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))


def test_weighted_loss_needs_one_weight_per_output():
    outs = [np.full((2, 3), 1 / 3, np.float32)] * 2
    with pytest.raises(ValueError, match="2 outputs but 1 weights"):
        losses.weighted_loss(outs, np.array([0, 1]), weights=[1.0])


# ----------------------------------------------------------------------------------------------- weights
def test_load_weights_with_wrong_shapes_leaves_the_model_unchanged(tmp_path):
    source = tiny_model()
    source.save_weights(tmp_path / "w.npz")
    x = Input((4, 4, 2))
    # same names, same first layer, but the head now has 4 units: head/kernel (8, 4) vs (8, 3) in the file
    target = Model(x, Dense(4, name="head")(Flatten()(Conv2D(2, 3, name="conv")(x))))
    before = target.get_weights()
    with pytest.raises(ShapeError, match=esc("layer 'head' weight 'kernel' has shape (8, 4)") + ".*"
                       + esc("holds (8, 3)")):
        target.load_weights(tmp_path / "w.npz")
    for u, v in zip(before, target.get_weights()):  # 'conv' came first and fits, yet it was not loaded
        np.testing.assert_array_equal(u, v)


def test_load_weights_with_missing_keys(tmp_path):
    x = Input((4, 4, 2))
    Model(x, Conv2D(2, 3, name="conv")(x)).save_weights(tmp_path / "part.npz")
    target = tiny_model()
    before = target.get_weights()
    with pytest.raises(KeyError, match=esc("lacks 2 weights") + ".*head/kernel"):
        target.load_weights(tmp_path / "part.npz")
    for u, v in zip(before, target.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_load_weights_with_unexpected_keys(tmp_path):
    tiny_model().save_weights(tmp_path / "w.npz")
    x = Input((4, 4, 2))
    target = Model(x, Conv2D(2, 3, name="conv")(x))
    with pytest.raises(KeyError, match="no layer of this model owns.*head/"):
        target.load_weights(tmp_path / "w.npz")


def test_load_weights_refuses_pickled_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"conv/kernel": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        tiny_model().load_weights(path)


def test_set_weights_checks_every_shape_first():
    model = tiny_model()
    before = model.get_weights()
    bad = [w.copy() + 1 for w in before]
    bad[-2] = np.zeros((8, 5))
    with pytest.raises(ShapeError, match=esc("layer 'head': weight 'kernel' has shape (8, 3), got (8, 5)")):
        model.set_weights(bad)
    for u, v in zip(before, model.get_weights()):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="got 3 arrays, expected 4"):
        model.set_weights(before[:3])
    layer = model.get_layer("conv")
    with pytest.raises(ValueError, match=esc("layer 'conv': set_weights got 1 arrays, expected 2 (kernel, bias)")):
        layer.set_weights(before[:1])


# ----------------------------------------------------------------------------------------------- model inputs
def test_predict_names_the_real_problem_with_x():
    """None, a dict with the wrong names and a symbolic tensor used to be reported as "has dtype object"."""
    from tinynet.layers.base import SymbolicTensor

    model = tiny_model()
    name = model.inputs[0].name
    with pytest.raises(ValueError, match=esc(f"x is required (one array per input ['{name}'])")):
        model.predict(None)
    with pytest.raises(ValueError, match=esc(f"x as a dict needs the input names ['{name}'] as keys; missing "
                                             f"['{name}'], unknown ['image']")):
        model.predict({"image": np.zeros((1, 4, 4, 2))})
    symbolic = Input((4, 4, 2))
    for call in (model, model.predict):
        with pytest.raises(TypeError, match="got the symbolic tensor .*a model runs on arrays.*call the layers"):
            call(symbolic)
    assert isinstance(symbolic, SymbolicTensor)


def test_a_sequential_model_called_on_a_symbolic_tensor_says_so():
    from tinynet.models import Sequential

    model = Sequential([Dense(2)])
    with pytest.raises(TypeError, match="got the symbolic tensor"):
        model(Input((3,)))
    assert not model.built


# ----------------------------------------------------------------------------------------------- weights files
def test_weights_load_by_layer_order_when_automatic_names_differ(tmp_path):
    """The same architecture built twice in one process gets conv2d, then conv2d_1: the file of the first used
    to be refused by the second ("has weights no layer of this model owns"). Now loaded by layer order, as
    Keras loads a legacy HDF5 file."""
    def build():
        x = Input((4, 4, 2))
        y = BatchNormalization()(Conv2D(2, 3)(x))
        return Model(x, Dense(3)(Flatten()(y)))

    first, second = build(), build()
    assert {layer.name for layer in first.layers}.isdisjoint(layer.name for layer in second.layers)
    first.save_weights(tmp_path / "first.npz")
    second.load_weights(tmp_path / "first.npz")
    for u, v in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("saved, change, why", [
    (lambda x: Dense(3)(Flatten()(Conv2D(2, 3)(x))), lambda x: Dense(3)(Flatten()(Conv2D(3, 3)(x))),
     "layer 0 with weights: 'conv2d' in the file, 'conv2d_1' in the model, weight 'kernel' of shape (3, 3, 2, 2) "
     "vs (3, 3, 2, 3)"),
    (lambda x: Dense(3)(Flatten()(Conv2D(2, 3)(x))), lambda x: Dense(3)(Flatten()(x)),
     "it has 2 layers with weights, the model 1"),
    (lambda x: Dense(32)(Dense(32, name="stem")(Flatten()(x))),
     lambda x: Dense(32, name="stem")(Dense(32)(Flatten()(x))),
     "layer 0 with weights: 'stem' in the file, 'dense_1' in the model, though both names are on both sides"),
], ids=["a shape differs", "a layer more", "a named layer elsewhere"])
def test_weights_that_fit_neither_by_name_nor_by_order_are_refused_saying_why(tmp_path, saved, change, why):
    """A named layer is never loaded from another layer's weights, whatever the order says."""
    from tinynet.layers import reset_names

    reset_names()
    x = Input((4, 4, 2))
    Model(x, saved(x)).save_weights(tmp_path / "w.npz")
    x = Input((4, 4, 2))
    target = Model(x, change(x))
    before = target.get_weights()
    with pytest.raises(KeyError, match=esc(why) + ".*name the layers, or call tinynet.layers.reset_names"):
        target.load_weights(tmp_path / "w.npz")
    for u, v in zip(before, target.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_a_weights_file_holding_nan_is_refused_naming_the_file(tmp_path):
    """The module notes said non-finite values "are loaded as they are", yet loading refused them without naming
    the file; now the notes say they are refused, and the message names the file, the layer and the weight."""
    from tinynet import saving

    source, target = tiny_model(), tiny_model()
    arrays = saving.weight_arrays(source)
    arrays["head/bias"] = np.array([0.0, np.nan, 1.0], np.float32)
    path = tmp_path / "diverged.npz"
    np.savez(path, **arrays)
    before = target.get_weights()
    with pytest.raises(ValueError, match=esc(f"load_weights: {path}: layer 'head': weight 'bias' holds NaN")):
        target.load_weights(path)
    for u, v in zip(before, target.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert "are refused, not loaded" in saving.__doc__ and "loaded as they are" not in saving.__doc__


# ----------------------------------------------------------------------------------------------- python -m tinynet
def run_tinynet_cli(*args, stdout=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tinynet", *args], stdout=stdout or subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def test_tinynet_cli_usage_error_is_one_line_with_exit_2():
    done = run_tinynet_cli("--cpu-kernels", "fortran\x1b[31m")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("python -m tinynet: error: argument --cpu-kernels: invalid choice: 'fortran\\x1b[31m' "
                           "(choose from 'numpy', 'numba')\n")


def test_tinynet_cli_into_a_closed_pipe_ends_quietly():
    """``python -m tinynet | head -1`` used to end in a BrokenPipeError traceback and exit 1."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "tinynet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()                                              # the reader goes away, as head does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and stderr == ""


def test_tinynet_cli_ctrl_c_is_one_line_with_exit_130(monkeypatch, capsys):
    from tinynet import __main__ as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "demo_model", interrupted)                 # Ctrl-C while the demo model is built
    try:
        status = cli.main([])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() (a traceback and exit 1)")
    assert status == 130
    assert capsys.readouterr().err == "\npython -m tinynet: interrupted\n"
