"""Data loaders on small files written by the tests, the built-in digits, batching and augmentation."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from tinynet import data
from tinynet.fileio import FileFormatError


def test_digits_split_is_fixed_and_stratified():
    train, test = data.load_digits()
    assert train.x.shape == (1438, 32, 32, 1) and test.x.shape == (359, 32, 32, 1)
    assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
    counts = np.bincount(test.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # every class split 80/20
    _, again = data.load_digits()
    assert np.array_equal(test.x, again.x) and np.array_equal(test.y, again.y)


def test_resize_matches_pillow_bilinear():
    rng = np.random.default_rng(0)
    img = rng.random((8, 8)).astype(np.float32)
    ours = data.resize_images(img[None, :, :, None], 32)[0, :, :, 0]
    pil = np.asarray(Image.fromarray(img, mode="F").resize((32, 32), Image.BILINEAR))
    np.testing.assert_allclose(ours, pil, atol=1e-5)
    assert data.resize_images(np.ones((2, 5, 7, 3)), (10, 3)).shape == (2, 10, 3, 3)


def test_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "dog"):
        os.makedirs(tmp_path / cls)
        for i in range(3):
            a = rng.integers(0, 256, (6, 5), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = a
    (tmp_path / "notes.txt").write_text("not a class")
    ds = data.load_folder(str(tmp_path))
    assert ds.class_names == ["cat", "dog"] and ds.x.shape == (6, 6, 5, 1)
    assert list(ds.y) == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(ds.x[4, :, :, 0], pixels[("dog", 1)] / 255.0, atol=1e-7)
    resized = data.load_folder(str(tmp_path), image_size=8, channels=3)
    assert resized.x.shape == (6, 8, 8, 3)


def test_npz_loader(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "one.npz", x=x, y=np.arange(5) % 2)
    ds = data.load_npz(str(tmp_path / "one.npz"))
    assert ds.x.shape == (5, 4, 4, 1) and ds.x.max() <= 1.0 and list(ds.y) == [0, 1, 0, 1, 0]
    np.savez(tmp_path / "split.npz", x_train=x[:3], y_train=[0, 1, 2], x_test=x[3:], y_test=[2, 1],
             class_names=np.array(["a", "b", "c"]))
    train, test = data.load_npz(str(tmp_path / "split.npz"))
    assert len(train) == 3 and len(test) == 2 and test.class_names == ["a", "b", "c"]
    np.savez(tmp_path / "bad.npz", images=x)  # an unknown member is refused by name, before any data is read
    with pytest.raises(FileFormatError, match="unexpected member.*images"):
        data.load_npz(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "half.npz", x=x)
    with pytest.raises(FileFormatError, match="needs arrays x and y"):
        data.load_npz(str(tmp_path / "half.npz"))


def write_idx(path, array, gz=False):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def test_mnist_idx_loader(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:2])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:2])
    assert np.array_equal(data.load_idx(str(tmp_path / "t10k-images-idx3-ubyte")), images[:2])
    train, test = data.load_mnist(str(tmp_path))
    assert train.x.shape == (4, 28, 28, 1) and list(train.y) == [3, 1, 4, 1] and len(test) == 2
    np.testing.assert_allclose(train.x[2, :, :, 0], images[2] / 255.0)
    train2, _ = data.load_dataset(str(tmp_path))
    assert np.array_equal(train2.x, train.x)
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        data.load_idx(str(tmp_path / "junk"))


def cifar_batch(rng, n, as_ndarray):
    """A CIFAR-10 style batch dict: data (n, 3072) uint8 rows of R, G, B planes, labels a list."""
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rows if as_ndarray else rows.tobytes(), b"filenames": [b"x.png"] * n}
    return images, batch


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_loader(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    expected = []
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        images, batch = cifar_batch(rng, 3, as_ndarray=name != "data_batch_2")
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        expected.append((images, batch[b"labels"]))
    train, test = data.load_cifar10(str(tmp_path))
    assert train.x.shape == (6, 32, 32, 3) and test.x.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(train.x[:3], expected[0][0] / 255.0)
    np.testing.assert_allclose(train.x[3:], expected[1][0] / 255.0)
    assert list(test.y) == expected[2][1] and train.class_names[0] == "airplane"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_loader_refuses_code(tmp_path):
    payload = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.safe_unpickle(payload)
    obj_array = pickle.dumps({b"data": np.array([Evil()], dtype=object)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        data.safe_unpickle(obj_array)


def test_load_dataset_folder_split_and_errors(tmp_path):
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        for i in range(5):
            Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    train, test = data.load_dataset(str(tmp_path), image_size=8, test_fraction=0.2)
    assert train.x.shape == (8, 8, 8, 1) and test.x.shape == (2, 8, 8, 1)
    assert sorted(test.y) == [0, 1]
    with pytest.raises(FileNotFoundError):
        data.load_dataset(str(tmp_path / "missing"))


def test_batches_shuffle_and_augment():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 4, 4, 1), np.float32)
    y = np.arange(10)
    batches = list(data.iterate_batches(x, y, 4, shuffle=True, rng=np.random.default_rng(0)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    assert all(np.all(bx[:, 0, 0, 0] == by) for bx, by in batches)  # images follow their labels
    again = [b[1] for b in data.iterate_batches(x, y, 4, shuffle=True, rng=np.random.default_rng(0))]
    assert np.array_equal(np.concatenate(again), seen)

    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1).repeat(50, axis=0)
    cropped = data.random_crop(img, 1, np.random.default_rng(0))
    assert cropped.shape == img.shape
    # each crop is a shifted window of the zero-padded image: some are unshifted, some are shifted
    padded = np.pad(img[0, :, :, 0], 1)
    windows = {(dy, dx) for dy in range(3) for dx in range(3)}
    found = {next(w for w in windows if np.array_equal(c[:, :, 0], padded[w[0]:w[0] + 4, w[1]:w[1] + 4]))
             for c in cropped}
    assert len(found) > 3
    flipped = data.random_flip(img, np.random.default_rng(0))
    assert {bool(np.array_equal(f, img[0])) for f in flipped} == {True, False}
    assert all(np.array_equal(f, img[0]) or np.array_equal(f, img[0][:, ::-1]) for f in flipped)


def test_normalizer():
    x = np.random.default_rng(0).random((20, 3, 3, 2)).astype(np.float32) * 5 + 1
    norm = data.Normalizer.fit(x)
    z = norm(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-4)
    again = data.Normalizer(**norm.get_config())
    assert np.array_equal(again(x), z)


def test_digits_are_read_without_importing_scikit_learn_and_equal_its_loader():
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sk_digits

    from tinynet.data import loaders

    images, labels = loaders._digits_arrays()
    digits = sk_digits()
    np.testing.assert_array_equal(images, digits.images)
    np.testing.assert_array_equal(labels, digits.target)
    code = ("import sys; from tinynet.data import load_digits; load_digits(image_size=8); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
