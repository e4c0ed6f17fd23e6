"""Data loaders on small files written by the tests, the built-in digits, batching and augmentation."""
import gzip
import os
import pickle
import re
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


# ------------------------------------------------------------------------------------------ argument checks
@pytest.mark.parametrize("crop", [2.7, "2", True, -1, None])
def test_augment_crop_must_be_a_non_negative_integer(crop):
    with pytest.raises(ValueError, match=f"Augment: crop must be an integer >= 0, got {re.escape(repr(crop))}"):
        data.Augment(crop=crop)


@pytest.mark.parametrize("flip", ["no", 1, None])
def test_augment_flip_must_be_a_bool(flip):
    with pytest.raises(TypeError, match="Augment: flip must be True or False"):
        data.Augment(flip=flip)


def test_a_crop_must_keep_part_of_every_image():
    """Padding p and a window at offset dy in 0..2p keep no image row when dy + H <= p: possible once p >= H."""
    ones = np.ones((400, 8, 5, 1), np.float32)
    rng = np.random.default_rng(0)
    for padding in (5, 100):  # the smaller side is 5
        with pytest.raises(ValueError, match=rf"crop={padding} is too large for images of 8×5 \(batch of shape "
                                             rf"\(400, 8, 5, 1\)\).*less than 5"):
            data.Augment(crop=padding)(ones, rng)
        with pytest.raises(ValueError, match=f"random_crop: padding={padding} is too large"):
            data.random_crop(ones, padding, rng)
    cropped = data.Augment(crop=4, flip=True)(ones, rng)  # the largest crop allowed: each keeps some image
    assert cropped.shape == ones.shape and cropped.reshape(400, -1).max(axis=1).min() == 1.0
    assert np.array_equal(data.random_crop(ones, 0, rng), ones)
    with pytest.raises(ValueError, match="crop=4 is too large for images of 8×4"):  # before training starts
        data.Augment(crop=4).check_batch_shape((1, 8, 4, 1))


@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8, 1, 1, 1), (8,)])
def test_batches_must_be_nhwc(shape):
    x, rng = np.zeros(shape, np.float32), np.random.default_rng(0)
    message = rf"takes a batch of images \(N, H, W, C\), got shape {re.escape(str(shape))}"
    for name, call in (("Augment", lambda: data.Augment(crop=1)(x, rng)),
                       ("Augment", lambda: data.Augment(flip=True)(x, rng)),
                       ("random_crop", lambda: data.random_crop(x, 1, rng)),
                       ("random_flip", lambda: data.random_flip(x, rng)),
                       ("Normalizer.fit", lambda: data.Normalizer.fit(x))):
        with pytest.raises(ValueError, match=f"^{name}: {message}"):
            call()


@pytest.mark.parametrize("mean, std, error, message", [
    (0, 0, ValueError, r"std must be positive, got std\[0\] = 0"),
    ([0, 0], [1, -1], ValueError, r"std must be positive, got std\[1\] = -1"),
    (0, 1e-50, ValueError, "std must be positive"),  # 0 as float32
    (np.nan, 1, ValueError, r"mean must be finite .*mean\[0\] = nan"),
    (0, np.inf, ValueError, "std must be finite"),
    (1e39, 1, ValueError, "mean must be finite"),  # inf as float32
    ([], 1, ValueError, "mean is empty"),
    ([0, 0, 0], [1, 1], ValueError, "3 means but 2 standard deviations"),
    ("0.5", 1, TypeError, "mean must be a number or a sequence of numbers"),
    (0, [None], TypeError, "std must be a number"),
])
def test_normalizer_checks_its_statistics(mean, std, error, message):
    with pytest.raises(error, match=f"^Normalizer: {message}"):
        data.Normalizer(mean, std)


def test_normalizer_broadcasts_one_value_and_loads_old_configs():
    norm = data.Normalizer(0.5, [0.25, 0.5, 1.0])
    assert norm.get_config() == {"mean": [0.5] * 3, "std": [0.25, 0.5, 1.0]}
    old = data.Normalizer(mean=[0.5], std=[1e-6])  # what fit gave a constant channel before: still loads
    assert old.std.tolist() == [np.float32(1e-6)]


def test_normalizer_fit_refuses_empty_and_nonfinite_images():
    with pytest.raises(ValueError, match=r"Normalizer.fit: no pixels to measure \(images of shape \(0, 8, 8, 1\), "
                                         r"0 images\)"):
        data.Normalizer.fit(np.zeros((0, 8, 8, 1)))
    x = np.ones((2, 4, 4, 3), np.float32)
    x[1, 2, 2, 1], x[0, 0, 0, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match="Normalizer.fit: 2 pixel values of the 96 are NaN or infinite"):
        data.Normalizer.fit(x)


def test_normalizer_refuses_images_with_another_channel_count():
    rgb = data.Normalizer.fit(np.random.default_rng(0).random((4, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"Normalizer: images of shape \(2, 4, 4, 1\) have 1 channel\(s\) but the "
                                         r"normalizer holds 3 means"):
        rgb(np.zeros((2, 4, 4, 1)))
    assert data.Normalizer(0.5, 0.25)(np.ones((2, 4, 4, 3))).shape == (2, 4, 4, 3)  # one value: any channels


def test_normalizer_fit_on_a_constant_channel_keeps_values_small():
    x = np.random.default_rng(0).random((10, 4, 4, 2)).astype(np.float32)
    x[..., 1] = 0.5
    with pytest.warns(RuntimeWarning, match="Normalizer.fit: channel 1 is constant in the training images"):
        norm = data.Normalizer.fit(x)
    probe = np.full((1, 4, 4, 2), 0.6, np.float32)
    assert norm(probe)[..., 1].max() == pytest.approx(0.2)  # (0.6 - 0.5) / 0.5, not 1e5
    np.testing.assert_allclose(norm.std[0], x[..., 0].std(), rtol=1e-5)  # the other channel as before
    with pytest.warns(RuntimeWarning, match="channels 0, 1 are constant"):
        assert data.Normalizer.fit(np.zeros((2, 4, 4, 2))).std.tolist() == [1.0, 1.0]
