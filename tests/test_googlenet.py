"""GoogLeNet on tinynet: parameter counts, shapes, names, Table 1 rebuilt from the model."""
import pytest

from inception.googlenet import PAPER_BLOCKS, googlenet
from inception.table1 import PAPER_TABLE1, format_table1, naive_vs_reduced, table1_rows, totals


def test_paper_counts_without_aux():
    m = googlenet(aux=False)
    assert m.count_params() == 6_998_552
    assert m.count_macs() == 1_582_671_872
    weights = sum(int(layer.weights[0].size) for layer in m.layers if layer.weight_names[:1] == ["kernel"])
    assert weights == 6_990_272
    assert m.outputs[0].shape == (None, 1000)


def test_blog_count_is_keras_count():
    m = googlenet(variant="blog")
    assert m.count_params() == 9_121_976
    assert [t.shape for t in m.outputs] == [(None, 4, 4, 1000), (None, 4, 4, 1000), (None, 1000)]
    names = {layer.name for layer in m.layers}
    assert {"conv1_bn", "conv2_bn", "flatten"} <= names and "pool1_norm1" not in names
    assert m.get_layer("5a_5x5").filters == 32 and m.get_layer("5b_5x5").filters == 48


def test_outputs_and_names():
    m = googlenet()
    assert [t.name for t in m.outputs] == ["aux1_output", "aux2_output", "output"]
    for name in ["conv1_7x7_s2", "pool1_norm1", "conv2_3x3_reduce", "3a_1x1", "3a_3x3_reduce", "4e_pool_proj",
                 "aux1_fc", "aux2_conv", "avg_pool", "dropout", "output"]:
        m.get_layer(name)
    assert m.get_layer("dropout").rate == 0.4 and m.get_layer("aux1_dropout").rate == 0.7
    shapes = {n.layer.name: n.output.example_shape for n in m.nodes}
    assert shapes["conv1_7x7_s2"] == (112, 112, 64)
    assert shapes["pool2_3x3_s2"] == (28, 28, 192)
    assert shapes["3b_output"] == (28, 28, 480)
    assert shapes["4a_output"] == (14, 14, 512) and shapes["aux1_pool"] == (4, 4, 512)
    assert shapes["4e_output"] == (14, 14, 832)
    assert shapes["5b_output"] == (7, 7, 1024)


@pytest.mark.parametrize("size", [96, 160, 225])
def test_paper_takes_other_sizes(size):
    m = googlenet((size, size, 3), num_classes=7)
    assert [t.shape for t in m.outputs] == [(None, 7)] * 3


def test_forward_runs_small_batch():
    import numpy as np

    m = googlenet((96, 96, 3), num_classes=5)
    outs = m.predict(np.random.default_rng(0).standard_normal((2, 96, 96, 3)).astype("float32"))
    for o in outs:
        assert o.shape == (2, 5) and o.dtype == np.float32
        np.testing.assert_allclose(o.sum(axis=1), 1.0, rtol=1e-5)


def test_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        googlenet(variant="v3")


def test_small_variant_dispatch():
    small = pytest.importorskip("inception.small")
    if not hasattr(small, "googlenet_small"):
        pytest.skip("inception.small has no googlenet_small yet")
    m = googlenet((32, 32, 3), num_classes=10, aux=False, variant="small")
    assert m.outputs[0].shape == (None, 10)


def test_table1_rows_follow_the_channels():
    rows = table1_rows(googlenet())
    by_type = {r.type: r for r in rows}
    for key, (c1, r3, c3, r5, c5, pp) in PAPER_BLOCKS.items():
        r = by_type[f"inception ({key})"]
        assert r.channels == {"#1x1": c1, "#3x3 reduce": r3, "#3x3": c3, "#5x5 reduce": r5, "#5x5": c5,
                              "pool proj": pp}
        assert r.depth == 2 and r.paper == PAPER_TABLE1[key]
    assert by_type["inception (3a)"].weights == 163_328
    assert by_type["inception (3a)"].output == "28×28×256"
    conv2 = [r for r in rows if r.key == "conv2"][0]
    assert conv2.channels == {"#3x3 reduce": 64, "#3x3": 192} and conv2.weights == 114_688
    t = totals(rows, aux=False)
    assert (t.params, t.weights, t.macs) == (6_998_552, 6_990_272, 1_582_671_872)
    assert totals(rows, aux=True).params == 13_378_280


def test_table1_marks_the_papers_inconsistencies():
    rows = {r.key: r for r in table1_rows(googlenet())}
    assert rows["conv1_7x7_s2"].mismatches() == (True, True)          # 2.7K / 34M printed, 9.2K / 118M
    for key in ("4c", "5a", "5b"):
        assert rows[key].mismatches()[0], key
    for key in ("3a", "3b", "4a", "4b", "4e"):
        assert rows[key].mismatches() == (False, False), key
    text = format_table1(list(rows.values()))
    assert "2.7K≠" in text and "463K≠" in text and "6,998,552" in text


def test_naive_vs_reduced_saves():
    comps = {c.name: c for c in naive_vs_reduced(googlenet(aux=False))}
    assert len(comps) == 9
    c = comps["3a"]
    # naive 3a on 28×28×192: 1×1 64, 3×3 128, 5×5 32 straight on 192 channels
    assert c.naive_params == 192 * 64 + 9 * 192 * 128 + 25 * 192 * 32 + 64 + 128 + 32
    assert c.reduced_params == 163_328 + 256 + 96 + 16
    assert c.naive_macs == (192 * 64 + 9 * 192 * 128 + 25 * 192 * 32) * 28 * 28
    assert c.naive_depth == 64 + 128 + 32 + 192 and c.reduced_depth == 256
    assert all(c.params_saved > 0 and c.macs_saved > 0 for c in comps.values())


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(aux="no"), TypeError, "googlenet_small: aux must be True or False, got 'no'"),  # read as True before
    (dict(num_classes=1), ValueError, "num_classes must be an integer >= 2, got 1"),
    (dict(num_classes="10"), ValueError, "num_classes must be an integer >= 2, got '10'"),
])
def test_googlenet_names_a_bad_argument_before_building(kwargs, error, message):
    with pytest.raises(error, match=message):
        googlenet((32, 32, 1), **dict(dict(num_classes=10), **kwargs), variant="small")
    with pytest.raises(error, match=message.replace("googlenet_small", "googlenet_paper")):
        googlenet(**dict(dict(num_classes=10), **kwargs), variant="paper")


@pytest.mark.parametrize("blocks, message", [
    ({"9z": (1,) * 6}, r"blocks: unknown names \['9z'\]"),  # ignored before: the default network was built
    ({"3a": (1,) * 7}, "block '3a' needs six integer widths >= 1"),
    ({"3a": None}, "block '3a' needs six integer widths >= 1"),
    ({"4b": (4, 4, 4, 4, 4, 0)}, "block '4b' needs six integer widths >= 1"),
])
def test_small_blocks_are_checked(blocks, message):
    from inception import googlenet_small

    with pytest.raises(ValueError, match=message):
        googlenet_small((32, 32, 1), aux=False, blocks=blocks)
