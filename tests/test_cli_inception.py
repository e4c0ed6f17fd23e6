"""The summary, plot and check-keras commands, run through their own parsers (as ``python -m inception``)."""
import argparse
import importlib

import pytest


def _run(module, argv, capsys):
    parser = argparse.ArgumentParser()
    importlib.import_module(module).register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_summary_paper(capsys):
    code, out = _run("inception.cli_table", ["summary"], capsys)
    assert code == 0
    for text in ["inception (3a)", "2.7K≠", "34M≠", "463K≠", "1072K≠", "1388K≠", "6,998,552", "1,582,671,872",
                 "13,378,280", "Naive", "saved"]:
        assert text in out, text


def test_summary_blog_other_size(capsys):
    code, out = _run("inception.cli_table", ["summary", "--variant", "blog", "--input-size", "224"], capsys)
    assert code == 0 and "9,121,976" in out and "batch norm" in out and "4×4×1000" in out


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_plot_writes_a_file(tmp_path, capsys, ext):
    target = tmp_path / f"model.{ext}"
    code, out = _run("inception.cli_plot", ["plot", "--to-file", str(target)], capsys)
    assert code == 0 and target.exists()
    assert target.stat().st_size > 50_000
    if ext == "png":
        from PIL import Image

        w, h = Image.open(target).size
        assert h > 3000 and w > 1000          # tall, one box per layer


def test_plot_blog_without_aux(tmp_path, capsys):
    target = tmp_path / "blog.png"
    code, _ = _run("inception.cli_plot", ["plot", "--variant", "blog", "--no-aux", "--to-file", str(target)], capsys)
    assert code == 0 and target.stat().st_size > 50_000


@pytest.mark.keras
def test_check_keras_prints_the_table(capsys, monkeypatch):
    """The command's table, on a small stand-in for GoogLeNet (the real comparison is test_keras_parity's)."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("jax")
    import inception.keras_reference as ref

    def small_googlenet(shape, num_classes, variant, dropout):
        x = keras.Input(shape, name="input")
        y = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv")(x)
        y = keras.layers.BatchNormalization(name="bn")(y)
        y = keras.layers.GlobalAveragePooling2D(name="avg_pool")(y)
        y = keras.layers.Dropout(0.4 if dropout else 0.0, name="dropout")(y)
        outs = [keras.layers.Dense(num_classes, activation="softmax", name=n)(y)
                for n in ("aux1_output", "aux2_output", "output")]
        return keras.Model(x, outs, name=f"googlenet_{variant}")

    monkeypatch.setattr(ref, "keras_googlenet", small_googlenet)
    import inception.cli_keras as cli_keras

    monkeypatch.setattr(cli_keras, "model_from_args", lambda args: None)  # the stand-in takes a 9x9 input
    code, out = _run("inception.cli_keras", ["check-keras", "--input-size", "9", "--batch", "2"], capsys)
    assert code == 0, out
    for text in ["float32 outputs (abs)", "float64 gradients (rel)", "aux1_output", "conv/kernel", "yes"]:
        assert text in out, text
