"""Gradient-norm groups (tinynet.grad_norms): which layers a group's prefixes take, and bad groups refused
when the recorder is built (before training), not recorded as norms of 0."""
import numpy as np
import pytest

import tinynet
from tinynet import layers, optimizers
from tinynet.grad_norms import GradNormRecorder, layer_groups, matches_prefix
from tinynet.training import Trainer

from helpers import tiny_model, toy_data


@pytest.fixture(autouse=True)
def _numpy_kernels():
    tinynet.set_cpu_kernels("numpy")


def reviewer_model():
    """Conv 'c1' → pool → Dense 'out': layer names without any '_'."""
    tinynet.layers.reset_names()
    tinynet.set_seed(0)
    x = layers.Input((8, 8, 1))
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="c1")(x))
    return tinynet.Model(x, layers.Dense(3, activation="softmax", name="out")(h))


@pytest.mark.parametrize("name, prefixes, expected", [
    ("conv1", ("conv1",), True),
    ("conv1_bn", ("conv1",), True),
    ("conv10", ("conv1",), False),
    ("conv1bn", ("conv1",), False),
    ("3a_1x1", ("3",), False),
    ("3a_1x1", ("4", "3a"), True),
])
def test_a_prefix_matches_the_exact_name_or_the_name_and_an_underscore(name, prefixes, expected):
    assert matches_prefix(name, prefixes) is expected


def test_exact_layer_names_are_recorded():
    trainer = Trainer(reviewer_model(), optimizers.SGD(0.1), batch_size=4, verbose=False,
                      grad_norm_groups=[("head", ["out"]), ("conv", ("c1",))], grad_norm_every=1)
    trainer.fit(toy_data(n=12), epochs=1)
    norms = trainer.grad_norms
    assert norms["step"] == [0, 1, 2]
    for group in ("head", "conv"):
        assert all(v > 0 for v in norms["with_aux"][group] + norms["main_only"][group]), group


def test_a_group_that_matches_no_trainable_layer_fails_before_training():
    model = reviewer_model()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"grad_norm_groups: group 'x' \(prefixes \['zzz'\]\) matches no layer "
                                         r"with trainable weights.*: c1, out$"):
        Trainer(model, optimizers.SGD(0.1), batch_size=4, verbose=False,
                grad_norm_groups=[("head", ["out"]), ("x", ["zzz"])], grad_norm_every=1)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    with pytest.raises(ValueError, match="group 'pool' .* matches no layer with trainable weights"):
        layer_groups(tiny_model(), [("pool", ("pool", "gap"))])  # layers without weights do not count


def test_a_long_list_of_layer_names_is_cut():
    tinynet.layers.reset_names()
    x = layers.Input((4,))
    h = x
    for i in range(20):
        h = layers.Dense(4, name=f"d{i}")(h)
    with pytest.raises(ValueError, match=r": d0, d1, .*d11, \.\.\. \(20 in all\)$"):
        layer_groups(tinynet.Model(x, h), [("nothing", ("e",))])


@pytest.mark.parametrize("groups, message", [
    ("low", "must be a list of"),
    ([("low",)], "must be a \\(name, prefixes\\) pair"),
    ([("", ("low",))], "name must be a non-empty string"),
    ([("low", "low")], "prefixes must be a non-empty list or tuple"),
    ([("low", ())], "prefixes must be a non-empty list or tuple"),
    ([("low", ("low", ""))], "prefixes must be a non-empty list or tuple"),
    ([("low", ("low",)), ("low", ("high",))], "'low' is given twice"),
])
def test_malformed_groups_are_refused(groups, message):
    with pytest.raises(ValueError, match=message):
        GradNormRecorder(tiny_model(), groups, every=1)


@pytest.mark.parametrize("every", [0, 1.5, "2", True])
def test_every_is_checked(every):
    with pytest.raises(ValueError, match="GradNormRecorder: every must be an integer >= 1"):
        GradNormRecorder(tiny_model(), [("low", ("low",))], every=every)


def test_inception_stages_group_the_small_network():
    from inception.small import STAGES, googlenet_small

    model = googlenet_small()
    groups = layer_groups(model, list(STAGES))
    assert list(groups) == ["stem", "3", "4", "5"]
    for group, prefixes in STAGES:
        names = [layer.name for layer in groups[group]]
        assert names and all(name.split("_")[0] in prefixes for name in names), group
    assert {name.split("_")[0] for name in (layer.name for layer in groups["4"])} == {"4a", "4b", "4c", "4d", "4e"}
