"""Model.summary's table (tinynet.summary): Keras 3's columns, "Connected to" for graphs, widths that fit.

Keras 3.15 on the README's branching example (``KERAS_BACKEND=jax``) prints ``Layer (type)``, ``Output Shape``,
``Param #`` and ``Connected to`` (``conv2d[0][0]``, one line per input), leaves "Connected to" out for a plain
chain, and ends with ``Total params: 818 (3.20 KB)``; tinynet adds its ``Mult-adds`` column.
"""
import pytest

import tinynet
from tinynet import summary
from tinynet.layers import (Dense, Input, concatenate)
from helpers import readme_model


def chain_model():
    x = Input((4,))
    return tinynet.Model(x, Dense(3)(Dense(5)(x)))


def table(text):
    """The lines between the header's rules and the closing rule."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"="}]
    return lines[rules[0] + 1], lines[rules[1] + 1:rules[2]]


def test_branching_model_has_keras_columns_and_connections():
    text = summary.summary_text(readme_model(), line_length=120)
    header, rows = table(text)
    assert header.split("  ")[0] == "Layer (type)"
    for column in ["Output Shape", "Param #", "Mult-adds", "Connected to"]:
        assert column in header
    assert header.index("Param #") < header.index("Mult-adds") < header.index("Connected to")
    conv = next(r for r in rows if r.startswith("conv2d (Conv2D)"))
    assert conv.split() == ["conv2d", "(Conv2D)", "(None,", "32,", "32,", "16)", "448", f"{32 * 32 * 16 * 27:,}",
                            "input_layer[0][0]"]
    k = next(i for i, r in enumerate(rows) if r.startswith("concatenate (Concatenate)"))
    assert rows[k].rstrip().endswith("conv2d[0][0],") and rows[k + 1].strip() == "max_pooling2d[0][0]"
    assert next(r for r in rows if r.startswith("input_layer")).rstrip().endswith("-")
    for expected in ["Total params: 818 (3.20 KB)", "Trainable params: 818 (3.20 KB)",
                     "Non-trainable params: 0 (0.00 B)", "Mult-adds per example: 442,718"]:
        assert expected in text, expected


def test_a_chain_has_no_connected_to_column():
    model = chain_model()
    assert summary.is_sequential_like(model)
    header, rows = table(summary.summary_text(model))
    assert "Connected to" not in header and len(rows) == 3


@pytest.mark.parametrize("build", ["fan_out", "shared", "two_inputs", "two_outputs"])
def test_graphs_that_are_not_chains_get_the_column(build):
    x = Input((4,))
    if build == "fan_out":
        model = tinynet.Model(x, concatenate([Dense(2)(x), Dense(3)(x)]))
    elif build == "shared":
        d = Dense(4)
        model = tinynet.Model(x, d(d(x)))
    elif build == "two_inputs":
        z = Input((2,))
        model = tinynet.Model([x, z], Dense(1)(concatenate([x, z])))
    else:
        model = tinynet.Model(x, [Dense(2)(x), Dense(3)(Dense(2)(x))])
    assert not summary.is_sequential_like(model)
    assert "Connected to" in table(summary.summary_text(model))[0]


def test_a_shared_layer_row_per_call_parameters_once():
    d = Dense(3)
    x = Input((3,))
    rows = list(summary.layer_rows(tinynet.Model(x, d(d(d(x))))))
    assert [r.connected_to for r in rows] == [[], ["input_layer[0][0]"], ["dense[0][0]"], ["dense[1][0]"]]
    assert [r.params for r in rows] == [0, 12, 0, 0] and [r.macs for r in rows] == [0, 9, 9, 9]


@pytest.mark.parametrize("line_length", [60, 80, 98, 140])
def test_explicit_line_length_is_the_table_width(line_length):
    text = summary.summary_text(readme_model(), line_length=line_length)
    lines = text.splitlines()
    assert max(len(line) for line in lines) == line_length
    assert all(set(line) != {"="} or len(line) == line_length for line in lines if line)
    names = ["input_layer", "conv2d", "max_pooling2d", "concatenate", "dense_1"]
    for name in names if line_length >= 80 else [n[:11] for n in names]:   # wrapped, not lost (cut when narrow)
        assert any(line.startswith(name) for line in lines), name


def test_narrow_tables_wrap_names_shapes_and_connections():
    lines = summary.summary_text(readme_model(), line_length=60).splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("conv2d"))
    assert lines[k].startswith("conv2d  ") and lines[k + 1].startswith("(Conv2D)")
    assert "(None, 32," in lines[k] and "32, 16)" in lines[k + 1]


def test_no_line_length_fits_the_terminal(monkeypatch):
    model = readme_model()
    monkeypatch.setenv("COLUMNS", "200")
    wide = summary.summary_text(model).splitlines()
    assert max(len(line) for line in wide) <= 140
    assert not any(line.endswith("…") for line in wide)       # room enough: nothing cut
    monkeypatch.setenv("COLUMNS", "40")                         # never below 80
    assert max(len(line) for line in summary.summary_text(model).splitlines()) == 80
    monkeypatch.setenv("COLUMNS", "100")
    assert max(len(line) for line in summary.summary_text(model).splitlines()) <= 100
    assert summary.terminal_line_length() == 100


def test_a_small_model_is_only_as_wide_as_it_needs(monkeypatch):
    monkeypatch.setenv("COLUMNS", "140")
    lines = summary.summary_text(chain_model()).splitlines()
    assert max(len(line) for line in lines) < 80


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-5, ValueError), (98.5, TypeError), ("98", TypeError),
                                        (True, TypeError)])
def test_line_length_is_checked(bad, error):
    with pytest.raises(error, match="line_length"):
        summary.summary_text(chain_model(), line_length=bad)


def test_readable_size_as_keras():
    assert [summary.readable_size(n) for n in (0, 818 * 4, 1024 ** 2, 5 * 1024 ** 3)] == \
        ["0.00 B", "3.20 KB", "1.00 MB", "5.00 GB"]


def test_print_summary_prints_the_table_once_and_returns_none(capsys):
    model = readme_model()
    assert summary.print_summary(model, line_length=100) is None  # as Keras: a notebook shows the table once
    assert capsys.readouterr().out == summary.summary_text(model, line_length=100) + "\n"
    printed = []
    assert summary.print_summary(model, print_fn=printed.append) is None
    assert printed == [summary.summary_text(model)]  # one call with the whole table, as Keras 3
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad", ["print", 1])
def test_print_fn_must_be_callable(bad, capsys):
    with pytest.raises(TypeError, match="print_fn must be a callable or None"):
        summary.print_summary(chain_model(), print_fn=bad)
    assert capsys.readouterr().out == ""


def test_model_summary_prints_and_returns_none_as_keras(capsys):
    """Needs Model.summary to delegate to print_summary (tinynet/model.py): Keras' summary returns None."""
    model = readme_model()
    printed = []
    assert model.summary(print_fn=printed.append, line_length=100) is None
    assert printed == [summary.summary_text(model, line_length=100)]
    assert model.summary() is None
    assert model.summary(print_fn=None) is None  # None prints, as in Keras
    assert capsys.readouterr().out == 2 * (summary.summary_text(model) + "\n")
