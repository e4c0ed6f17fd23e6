"""The README's API example runs as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no python example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["dx"].shape == (4, 32, 32, 3)
    assert "Total params" in capsys.readouterr().out


def test_readme_compile_fit_example_runs(tmp_path, monkeypatch):
    """The compile/fit example trains and reports Keras' history keys (NumPy kernels: no compile time)."""
    import tinynet

    tinynet.set_cpu_kernels("numpy")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "model.compile(" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert set(namespace["history"].history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert namespace["accuracy"] > 0.5
    assert (tmp_path / "model.png").exists()
