"""Review 6 of inception/ and tinynet/interop/keras.py: bad arguments refused early, naming the function."""
import os

import numpy as np
import pytest

from inception.blocks import aux_head, inception_block, naive_inception_block
from inception.googlenet import googlenet
from inception.small import googlenet_small
from inception.table1 import format_table1, table1_rows
from tinynet.layers import Input, ShapeError


@pytest.mark.parametrize("shape", [(224, 224), (0, 64, 3), (64, -1, 3), (64.0, 64, 3), (True, 64, 3), 64,
                                   (None, None, 3)])
@pytest.mark.parametrize("variant", ["paper", "small"])
def test_a_bad_input_shape_names_the_builder_and_the_argument(shape, variant):
    with pytest.raises(ValueError, match=rf"googlenet_{variant}: input_shape must be"):
        googlenet(shape, num_classes=10, aux=False, variant=variant)


@pytest.mark.parametrize("variant, shape, aux, least", [("paper", (64, 64, 3), True, 65),
                                                        ("paper", (224, 60, 3), True, 65),
                                                        ("blog", (192, 224, 3), False, 193)])
def test_an_input_too_small_is_refused_before_any_layer_is_built(monkeypatch, variant, shape, aux, least):
    import inception.paper

    def no_layers(*args, **kwargs):
        raise AssertionError("a layer was built")

    monkeypatch.setattr(inception.paper, "Input", no_layers)
    with pytest.raises(ShapeError, match=rf"googlenet_{variant}: input_shape .* too small.*at least {least}"):
        googlenet(shape, num_classes=10, aux=aux, variant=variant)


def test_the_smallest_sizes_still_build():
    assert googlenet((65, 65, 1), num_classes=2, aux=True).outputs[0].example_shape == (2,)
    assert googlenet((8, 8, 3), num_classes=2, aux=False).outputs[0].example_shape == (2,)


def test_small_input_shape_checked_too():
    with pytest.raises(ValueError, match=r"googlenet_small: input_shape must be .* got \(32, 32, 0\)"):
        googlenet_small((32, 32, 0))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_inception_block_widths_name_the_function_and_argument(bad):
    x = Input((8, 8, 4))
    with pytest.raises(ValueError, match=rf"inception_block: c5 must be an integer >= 1, got {bad!r}"):
        inception_block(x, 2, 2, 2, 2, bad, 2, name="3a")
    with pytest.raises(ValueError, match=rf"naive_inception_block: c3 must be an integer >= 1, got {bad!r}"):
        naive_inception_block(x, 2, bad, 2)


def test_aux_head_refuses_a_flatten_that_is_not_a_bool_and_bad_classes():
    x = Input((14, 14, 8))
    with pytest.raises(TypeError, match="aux_head: flatten must be True or False, got 'no'"):
        aux_head(x, 10, flatten="no")
    with pytest.raises(ValueError, match="aux_head: num_classes must be an integer >= 1, got 2.5"):
        aux_head(x, 2.5)


def test_table1_compares_with_the_paper_only_for_the_papers_network():
    rows = table1_rows(googlenet((97, 61, 3), aux=False))
    assert all(r.paper is None for r in rows)
    assert "≠" not in format_table1(rows)
    small = table1_rows(googlenet_small((16, 16, 1), aux=False))
    assert all(r.paper is None for r in small)
    with pytest.raises(TypeError, match="table1_rows: model must be a tinynet Model, got str"):
        table1_rows("googlenet")


# --------------------------------------------------------------------------------------------- Keras interop
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


def test_a_frozen_batch_norm_is_refused(keras):
    from tinynet.interop.keras import UnsupportedKerasError, from_keras

    x = keras.Input((3,))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(x, bn(x))
    bn.trainable = False   # Keras then normalises with the moving statistics even in training
    with pytest.raises(UnsupportedKerasError, match="'bn'.*trainable=False"):
        from_keras(model)


def test_mixed_precision_is_refused(keras):
    from tinynet.interop.keras import UnsupportedKerasError, from_keras

    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(2, dtype="mixed_float16", name="d")(x))
    with pytest.raises(UnsupportedKerasError, match="'d'.*mixed_float16"):
        from_keras(model)


def test_wrong_model_types_and_an_unbuilt_sequential(keras):
    from tinynet import Model
    from tinynet.interop.keras import UnsupportedKerasError, from_keras, to_keras
    from tinynet.layers import Dense

    with pytest.raises(TypeError, match="from_keras: model must be a keras.Model, got str"):
        from_keras("model.keras")
    x = keras.Input((3,))
    keras_model = keras.Model(x, keras.layers.Dense(2)(x))
    with pytest.raises(TypeError, match="to_keras: model must be a tinynet Model, got Functional"):
        to_keras(keras_model)
    with pytest.raises(UnsupportedKerasError, match="is not built"):
        from_keras(keras.Sequential([keras.layers.Dense(2)]))
    t = Input((3,))
    tiny = Model(t, Dense(2)(t))
    back = from_keras(to_keras(tiny))
    data = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(back.predict(data), tiny.predict(data), rtol=1e-6)


def test_the_inception_plot_refuses_a_non_model_and_a_non_string_title(tmp_path):
    from inception.plot import plot_model

    with pytest.raises(TypeError, match="inception plot: model must be a tinynet Model, got str"):
        plot_model("googlenet", tmp_path / "g.png")
    x = Input((8, 8, 2))
    from tinynet import Model
    model = Model(x, inception_block(x, 2, 2, 2, 2, 2, 2, name="3a"))
    with pytest.raises(TypeError, match="inception plot: title must be a string or None, got int"):
        plot_model(model, tmp_path / "g.png", title=5)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(aux="no"), TypeError, "keras_googlenet: aux must be True or False"),
    (dict(num_classes=1), ValueError, "keras_googlenet: num_classes must be an integer >= 2"),
    (dict(input_shape=(64, 64, 3)), ShapeError, r"keras_googlenet: input_shape \(64, 64, 3\) is too small"),
    (dict(input_shape=(150, 150, 3), variant="blog", aux=False), ShapeError, "at least 193"),
    (dict(dropout="no"), TypeError, "keras_googlenet: dropout must be True or False"),
    (dict(variant=["paper"]), ValueError, "keras_googlenet: variant must be"),
])
def test_keras_googlenet_checks_its_arguments_as_googlenet_does(keras, kwargs, error, message):
    from inception.keras_reference import keras_googlenet

    with pytest.raises(error, match=message):
        keras_googlenet(**kwargs)
