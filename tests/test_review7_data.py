"""Review 7 of the in-memory data pipeline: batching, augmentation, splitting, datasets, resizing, validation.

Each test names what was wrong before its fix.
"""
import numpy as np
import pytest

from tinynet import data


def _xy(n=5):
    return np.zeros((n, 4, 4, 1), np.float32), np.arange(n) % 2


# ------------------------------------------------------------------------------------------ batches
@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "4", None])
def test_iterate_batches_refuses_bad_batch_size(batch_size):
    """A batch size of 0 raised range()'s error, -1 yielded no batch at all, 2.5 a bare TypeError."""
    x, y = _xy()
    with pytest.raises(ValueError, match="iterate_batches: batch_size must be an integer >= 1"):
        list(data.iterate_batches(x, y, batch_size))


def test_iterate_batches_shuffle_needs_a_generator():
    """``shuffle=True`` without ``rng`` raised AttributeError on None; an int seed one on int."""
    x, y = _xy()
    for rng in (None, 0):
        with pytest.raises(TypeError, match="iterate_batches: rng must be a numpy.random.Generator"):
            list(data.iterate_batches(x, y, 2, shuffle=True, rng=rng))
    assert len(list(data.iterate_batches(x, y, 2))) == 3  # no rng needed without shuffling


def test_iterate_batches_refuses_mismatched_lengths_before_any_batch():
    """5 images and 3 labels yielded two batches, then an IndexError; 3 images and 5 labels silently dropped
    two labels."""
    x, y = _xy()
    for xs, ys in ((x, y[:3]), (x[:3], y)):
        batches = data.iterate_batches(xs, ys, 2)
        with pytest.raises(ValueError, match=r"iterate_batches: \d images \(shape .*\) but \d labels"):
            next(batches)


def test_iterate_batches_takes_lists_and_keeps_last_partial_batch():
    """Lists (array-likes) raised TypeError on fancy indexing; the last batch is the remainder and a batch larger
    than the data gives one batch of everything."""
    x, y = _xy()
    sizes = [len(by) for _, by in data.iterate_batches(x.tolist(), y.tolist(), 2)]
    assert sizes == [2, 2, 1]
    assert [len(by) for _, by in data.iterate_batches(x, y, 64)] == [5]


@pytest.mark.parametrize("batch_size", [0, -2, 1.5])
def test_num_batches_refuses_bad_batch_size(batch_size):
    """``num_batches(5, 0)`` raised ZeroDivisionError and ``num_batches(5, -2)`` returned -2."""
    with pytest.raises(ValueError, match="num_batches: batch_size must be an integer >= 1"):
        data.num_batches(5, batch_size)
    assert data.num_batches(5, 2) == 3 and data.num_batches(0, 2) == 0


# ------------------------------------------------------------------------------------------ augmentation
def test_augmentation_takes_array_likes():
    """A nested list of images raised AttributeError ('list' has no attribute 'shape') in random_crop and
    Augment, and TypeError in random_flip."""
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5, 1)
    rng = np.random.default_rng
    assert np.array_equal(data.random_crop(x.tolist(), 1, rng(0)), data.random_crop(x, 1, rng(0)))
    assert np.array_equal(data.random_flip(x.tolist(), rng(0)), data.random_flip(x, rng(0)))
    assert np.array_equal(data.Augment(1, True)(x.tolist(), rng(3)), data.Augment(1, True)(x, rng(3)))


def test_augmentation_refuses_what_is_not_a_generator():
    """``rng=None`` (or a seed) raised AttributeError deep inside; a seed would also repeat the same draws on
    every batch if it were accepted."""
    x = np.zeros((2, 4, 4, 1), np.float32)
    for call in (lambda r: data.random_crop(x, 1, r), lambda r: data.random_flip(x, r),
                 lambda r: data.Augment(1, True)(x, r)):
        for rng in (None, 7):
            with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
                call(rng)


# ------------------------------------------------------------------------------------------ splitting
def test_stratified_split_refuses_nan_labels():
    """NaN labels matched no class, so their images were silently left out of both the train and test sets."""
    y = np.array([0, 0, 1, 1, np.nan, np.nan])
    with pytest.raises(ValueError, match="stratified_split: 2 label"):
        data.stratified_split(y, 0.5)


def test_stratified_split_takes_one_hot_labels_as_dataset_does():
    """One-hot labels (N, K) were split as N·K flat values: indices up to N·K - 1 for N images."""
    y = np.array([0, 0, 1, 1, 2, 2])
    onehot = np.eye(3)[y]
    tr, te = data.stratified_split(onehot, 0.5, seed=0)
    assert (tr.tolist(), te.tolist()) == tuple(a.tolist() for a in data.stratified_split(y, 0.5, seed=0))
    assert (tr.max(), te.max()) <= (5, 5) and len(tr) + len(te) == 6


def test_stratified_split_test_fraction_types():
    """A NumPy integer 0 was refused as outside [0, 1); ``True`` was accepted as 1 and refused only by luck,
    ``False`` as 0."""
    y = np.array([0, 0, 1, 1])
    tr, te = data.stratified_split(y, np.int64(0))
    assert len(tr) == 4 and len(te) == 0
    for bad in (False, True, float("nan"), 1, -0.1, "0.2"):
        with pytest.raises(ValueError, match="stratified_split: test_fraction must be"):
            data.stratified_split(y, bad)


# ------------------------------------------------------------------------------------------ Dataset
@pytest.mark.parametrize("x", [np.full((2, 2, 2), "a"), np.zeros((2, 2, 2), object), np.zeros((2, 2, 2), complex)])
def test_dataset_refuses_images_that_are_not_numbers(x):
    """Strings, objects and complex numbers were accepted as pixels and failed only once training started."""
    with pytest.raises(TypeError, match=r"Dataset: images of dtype \S+ \(shape \(2, 2, 2\)\)"):
        data.Dataset(x, [0, 1])


@pytest.mark.parametrize("shape", [(4, 0, 3, 1), (4, 3, 0, 1), (4, 3, 3, 0), (4, 0, 3)])
def test_dataset_refuses_images_without_pixels(shape):
    """Images of 0 rows, columns or channels made a Dataset that check_for_training passed without a word."""
    with pytest.raises(ValueError, match=r"Dataset: images of shape \(4, .*\) have no pixels"):
        data.Dataset(np.zeros(shape, np.float32), [0, 1, 0, 1])
    assert len(data.Dataset(np.zeros((0, 3, 3, 1)), np.zeros(0, np.int64))) == 0  # no images is still a Dataset


def test_dataset_keeps_memmaps_and_read_only_arrays_untouched(tmp_path):
    """(Regression guard) a read-only memmap is read, never written: the labels are a copy, the images a view."""
    path = tmp_path / "x.dat"
    mm = np.memmap(path, np.float32, "w+", shape=(4, 2, 2, 1))
    mm[:] = 0.5
    mm.flush()
    ro = np.memmap(path, np.float32, "r", shape=(4, 2, 2, 1))
    y = np.array([0, 1, 0, 1])
    y.flags.writeable = False
    ds = data.Dataset(ro, y)
    assert ds.y.flags.writeable and float(ds.x.max()) == 0.5
    assert data.check_for_training(ds) == []


# ------------------------------------------------------------------------------------------ resizing
@pytest.mark.parametrize("shape", [(1, 0, 4, 1), (1, 4, 0, 1)])
def test_resize_images_refuses_empty_images(shape):
    """Images of 0 rows or columns raised IndexError from inside the bilinear weights."""
    with pytest.raises(ValueError, match=r"resize_images: images of shape \(1, \d, \d, 1\) have no pixels"):
        data.resize_images(np.zeros(shape, np.float32), 3)


def test_resize_images_refuses_a_size_of_three_values():
    """``size=(2, 2, 2)`` raised 'too many values to unpack', naming neither the argument nor the value."""
    with pytest.raises(ValueError, match=r"image_size must be a positive int or a pair \(h, w\).*\(2, 2, 2\)"):
        data.resize_images(np.zeros((1, 4, 4, 1), np.float32), (2, 2, 2))


# ------------------------------------------------------------------------------------------ validation
def test_check_for_training_refuses_reordered_class_names_of_another_length():
    """train ['cat', 'dog'] and test ['dog', 'cat', 'bird'] passed: the names were compared only when the two
    lists were as long, so label 0 meant 'cat' in one set and 'dog' in the other."""
    train = data.Dataset(np.zeros((4, 2, 2, 1)), [0, 1, 0, 1], ["cat", "dog"])
    test = data.Dataset(np.zeros((4, 2, 2, 1)), [0, 1, 0, 1], ["dog", "cat", "bird"])
    with pytest.raises(ValueError, match="class names differ"):
        data.check_for_training(train, test)
    # a test set without the last classes (names derived from its own labels) is still fine
    train3 = data.Dataset(np.zeros((6, 2, 2, 1)), [0, 1, 2, 0, 1, 2])
    test2 = data.Dataset(np.zeros((2, 2, 2, 1)), [0, 1])
    assert data.check_for_training(train3, test2) == ["test: class 2 has no test images; its accuracy is not "
                                                      "measured"]


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_check_for_training_refuses_bad_batch_size(batch_size):
    """A batch size of 0, -3 or 2.5 passed the check meant to run before training."""
    train = data.Dataset(np.zeros((4, 2, 2, 1)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="check_for_training: batch_size must be an integer >= 1"):
        data.check_for_training(train, batch_size=batch_size)


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("channels", [True, False, 3.0, "3"])
def test_read_image_refuses_channels_that_are_not_1_or_3(tmp_path, channels):
    """``channels=True`` was taken as 1 (True == 1), ``3.0`` as 3."""
    from PIL import Image
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="read_image: channels must be None, 1 or 3"):
        data.read_image(str(path), channels=channels)
    (tmp_path / "c").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "c" / "a.png")
    with pytest.raises(ValueError, match="load_folder: channels must be None, 1 or 3"):
        data.load_folder(str(tmp_path), channels=channels)


@pytest.mark.parametrize("shape", [(1, 0, 4, 1), (1, 4, 0, 1), (1, 4, 4, 0)])
def test_resize_peak_refuses_empty_images(shape):
    """``resize_peak`` raised ZeroDivisionError for images of 0 columns or channels, and gave a peak for 0 rows
    that resize_images could not reach."""
    from tinynet.data.pixels import resize_peak
    with pytest.raises(ValueError, match=r"resize_peak: images of shape \(1, \d, \d, \d\) have no pixels"):
        resize_peak(shape, 3)


# ------------------------------------------------------------------------------------------ normalisation
def test_normalizer_fit_statistics_are_accurate_on_many_pixels():
    """The mean and standard deviation were accumulated in float32 over the (strided) N, H, W axes: on 2,000
    images of 32×32×3 half 0.6 and half 0.8 the mean came out 0.7033 (3 % of σ off), worse on CIFAR-10's size."""
    x = np.empty((2000, 32, 32, 3), np.float32)
    x[0::2], x[1::2] = 0.6, 0.8
    norm = data.Normalizer.fit(x)
    np.testing.assert_allclose(norm.mean, 0.7, rtol=0, atol=1e-6)
    np.testing.assert_allclose(norm.std, 0.1, rtol=0, atol=1e-6)
    assert norm.mean.dtype == np.float32 and x[0, 0, 0, 0] == np.float32(0.6)  # the input is left as it was


def test_dataset_names_ragged_images_and_the_shapes_of_mismatched_lengths():
    """A list of images of different sizes raised NumPy's 'inhomogeneous shape' error without naming Dataset;
    2 images and 3 labels said so without the shapes."""
    with pytest.raises(ValueError, match=r"Dataset: the images are not one array of numbers .*same shape"):
        data.Dataset([np.zeros((2, 2)), np.zeros((3, 3))], [0, 1])
    with pytest.raises(ValueError, match=r"Dataset: 2 images \(shape \(2, 2, 2, 1\)\) but 3 labels \(shape \(3,\)\)"):
        data.Dataset(np.zeros((2, 2, 2)), [0, 1, 0])
