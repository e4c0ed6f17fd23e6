"""Loaders: the built-in digits, ``.npz`` arrays, MNIST IDX files, and :func:`load_dataset`, which picks one.

:func:`load_dataset` takes ``'digits'`` or a path (an ``.npz``, a folder of MNIST IDX files, of CIFAR-10
batches (:mod:`tinynet.data.cifar`) or of class folders (:func:`tinynet.data.images.load_folder`)) and
returns ``(train, test)``. Every header is checked against ``max_bytes`` and the file's size before data is
read or decompressed.
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pathlib
import struct
import zlib

import numpy as np

from ..fileio import FileFormatError, npz_headers, read_npz
from ._common import _bound, _human_bytes, _open_maybe_gz
from .cifar import load_cifar10
from .dataset import Dataset, _as_labels, _check_class_names, _check_labels_named, _default_names, split
from .images import load_folder
from .pixels import _scale_arrays, resize_images, resize_peak


# -------------------------------------------------------------------------------------------- digits
#: how many images scikit-learn's digits hold
DIGITS_COUNT = 1797

def digits_peak(image_size, n=DIGITS_COUNT) -> int:
    """The most memory :func:`load_digits` holds at once for ``image_size``, in bytes: the resized images with
    the work of one slab of the resizing, or the whole set with its train and test copies while it is split."""
    out, peak = resize_peak((n, 8, 8, 1), image_size, contiguous=True)
    return max(peak, 2 * out) + n * 8 * 4


def load_digits(image_size=32, test_fraction=0.2, seed=0, max_bytes=None):
    """scikit-learn's handwritten digits (1,797 8×8 grey scans, 16 levels), shipped with scikit-learn.

    Parameters
    ----------
    image_size : int, default 32
        The 8×8 images are resized bilinearly to ``image_size``×``image_size``.
    test_fraction : float, default 0.2
    seed : int, default 0
        Fixes the stratified train/test split (359 test images for the defaults).
    max_bytes : int, optional
        Cap on the memory the load holds at its peak (:func:`digits_peak`; default
        :func:`tinynet.fileio.memory_bound`): a larger ``image_size`` is refused before anything is allocated.

    Returns
    -------
    train, test : Dataset
        Images (N, image_size, image_size, 1) in [0, 1]: white strokes on black.

    Raises
    ------
    tinynet.fileio.FileFormatError
        The images at ``image_size`` would need more than ``max_bytes``.
    """
    why = "" if max_bytes is not None else " (half this machine's memory)"
    max_bytes = _bound(max_bytes)
    need = digits_peak(image_size)
    if need > max_bytes:
        h, w = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
        raise FileFormatError(f"digits: the {DIGITS_COUNT:,} images at {h}x{w} would need {_human_bytes(need)} at the "
                              f"peak of loading ({_human_bytes(4 * DIGITS_COUNT * h * w)} as float32, with their "
                              f"train and test copies), more than the cap of {_human_bytes(max_bytes)} for this "
                              f"load{why}; refused before resizing")
    images, labels = _digits_arrays()
    x = images.astype(np.float32)[..., None] / 16.0
    x = resize_images(x, image_size)
    np.clip(x, 0.0, 1.0, out=x)  # in place: no second copy of the resized images
    full = Dataset(x, labels, [str(i) for i in range(10)])
    return split(full, test_fraction, seed)


def _digits_arrays():
    """The digits as (1797, 8, 8) pixel levels 0..16 and (1797,) labels.

    Read straight from the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and
    the label per row), found without importing scikit-learn, whose import takes seconds; through
    ``sklearn.datasets.load_digits`` when that file is not where it is expected.
    """
    spec = importlib.util.find_spec("sklearn")
    path = pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
        if table.shape == (1797, 65):
            return table[:, :64].reshape(-1, 8, 8), table[:, 64]
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    return digits.images, digits.target


# -------------------------------------------------------------------------------------------- .npz
NPZ_KEYS = ("x", "y", "x_train", "y_train", "x_test", "y_test", "class_names")


def _npz_peak(headers, pairs, split) -> int:
    """The most memory a load of these arrays holds at once, in bytes, from the headers alone.

    Loading holds every raw array, the float32 images made from them and the int64 labels (twice: the
    :class:`Dataset` takes its own copy). A single ``x``/``y`` set that :func:`load_dataset` then splits holds
    the whole float32 set and the train and test copies at once (the raw arrays are gone by then), with
    the labels and the split's indices.
    """
    raw = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    images = sum(math.prod(headers[xk][0]) * 4 for xk, _ in pairs)
    labels = sum(headers[yk][0][0] * 8 for _, yk in pairs)
    one_hot = sum(3 * math.prod(headers[yk][0]) for _, yk in pairs if len(headers[yk][0]) == 2)  # the checks' masks
    peak = raw + images + 2 * labels + one_hot
    if split and len(pairs) == 1:
        peak = max(peak, 2 * images + 6 * labels)
    return peak


def _npz_layout(path, headers, max_bytes, split=False):
    """Check the arrays' names, shapes and dtypes from the headers alone; return the (x, y) key pairs.

    ``max_bytes`` caps the peak memory of the load (:func:`_npz_peak`; ``split``: with :func:`load_dataset`'s
    train/test split).
    """
    keys = set(headers)
    split_keys = {"x_train", "y_train", "x_test", "y_test"}
    if keys & split_keys and keys & {"x", "y"}:
        raise FileFormatError(f"{path}: holds both x/y and x_train/y_train/x_test/y_test arrays; keep one layout")
    if split_keys <= keys:
        pairs = [("x_train", "y_train"), ("x_test", "y_test")]
    elif {"x", "y"} <= keys:
        pairs = [("x", "y")]
    else:
        raise FileFormatError(f"{path}: needs arrays x and y, or x_train, y_train, x_test and y_test; it has "
                              f"{', '.join(sorted(keys)) or 'no arrays'}")
    for xk, yk in pairs:
        (xs, xd), (ys, yd) = headers[xk], headers[yk]
        if len(xs) not in (3, 4) or 0 in xs[1:]:
            raise FileFormatError(f"{path}: array {xk!r} has shape {xs}; images must be (N, H, W) or (N, H, W, C)")
        if len(xs) == 4 and xs[1] in (1, 3, 4) and xs[3] not in (1, 3, 4):
            raise FileFormatError(f"{path}: array {xk!r} has shape {xs}, which looks channels-first (N, C, H, W); "
                                  f"tinynet takes (N, H, W, C): save x.transpose(0, 2, 3, 1)")
        if xd.kind not in "biuf":
            raise FileFormatError(f"{path}: array {xk!r} has dtype {xd}; images must be uint8, uint16, bool or "
                                  f"float")
        if len(ys) not in (1, 2) or yd.kind not in "biuf":
            raise FileFormatError(f"{path}: array {yk!r} has shape {ys} and dtype {yd}; labels must be integer "
                                  f"class indices of shape (N,) (or one-hot (N, K)); names go in class_names")
        if xs[0] != ys[0]:
            raise FileFormatError(f"{path}: {xs[0]} images in {xk!r} but {ys[0]} labels in {yk!r}")
    if "class_names" in headers:
        shape, dtype = headers["class_names"]
        if len(shape) != 1 or dtype.kind not in "US":
            raise FileFormatError(f"{path}: array 'class_names' has shape {shape} and dtype {dtype}; it must be a "
                                  f"1-D array of strings")
    need = _npz_peak(headers, pairs, split)
    if need > max_bytes:
        images = sum(math.prod(headers[xk][0]) * 4 for xk, _ in pairs)
        raise FileFormatError(f"{path}: loading needs {_human_bytes(need)} at its peak (the images are "
                              f"{_human_bytes(images)} as float32, held with the raw arrays"
                              + (" and the train/test copies" if split and len(pairs) == 1 else "")
                              + f"), more than the cap of {_human_bytes(max_bytes)} for this load; refused before "
                                f"reading them")
    return pairs


def _npz_names(path, array):
    if array.dtype.kind == "U":  # UCS-4 code units: NumPy turns one beyond U+10FFFF into a SystemError
        units = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).view("<u4")
        bad = (units > 0x10FFFF) | ((units >= 0xD800) & (units <= 0xDFFF))
        if bad.any():
            raise FileFormatError(f"{path}: 'class_names' holds {int(bad.sum())} value(s) that are not Unicode "
                                  f"characters (e.g. code {int(units[bad][0]):#x}: beyond U+10FFFF or a surrogate)")
    if array.dtype.kind == "S":
        try:
            return [s.decode("utf-8") for s in array.tolist()]
        except UnicodeDecodeError:
            raise FileFormatError(f"{path}: 'class_names' holds bytes that are not UTF-8") from None
    return [str(s) for s in array.tolist()]


def load_npz(path, max_bytes=None):
    """Arrays from an ``.npz``, read with :func:`tinynet.fileio.read_npz` (never unpickles).

    Arrays ``x``, ``y`` (one dataset), or ``x_train``, ``y_train``, ``x_test``, ``y_test`` (a split); an optional
    ``class_names`` string array. Any other member is refused by name, and every shape, dtype and the total
    size are checked from the ``.npy`` headers, before any data is decompressed.

    Parameters
    ----------
    path : str
    max_bytes : int, optional
        Cap on the memory the load holds at its peak (default :func:`tinynet.fileio.memory_bound`): the raw
        arrays, the float32 images made from them and the int64 labels, all alive at once.

    Returns
    -------
    Dataset, or (train, test) when the file holds a split.
        Images scaled by :func:`scale_pixels` (train and test by one rule); labels int64: whole-number float
        labels are cast, valid one-hot rows are converted with argmax.

    Raises
    ------
    tinynet.fileio.FileFormatError
        Not a readable ``.npz`` (truncated, bad CRC), an unknown member, missing arrays, images not
        (N, H, W[, C]) or channels-first, x and y of different lengths (both named), labels that are not
        integer-valued, negative or not one-hot, class names that are not strings, empty, repeated or fewer
        than the labels need, without class names a label of :data:`~tinynet.data.MAX_CLASSES` or more,
        pixel values that cannot be scaled, or a size beyond ``max_bytes``.
    """
    return _load_npz(path, max_bytes, split=False)


def _load_npz(path, max_bytes, split):
    """:func:`load_npz`; ``split``: the cap also counts :func:`load_dataset`'s split of an ``x``/``y`` set."""
    path = os.fspath(path)
    max_bytes = _bound(max_bytes)
    headers = npz_headers(path, allowed=NPZ_KEYS, max_bytes=max_bytes)
    pairs = _npz_layout(path, headers, max_bytes, split)
    # the file is opened again: what it holds must be what was checked (a file replaced in between is refused)
    arrays = read_npz(path, expected=headers, max_bytes=max_bytes)
    changed = [k for k, (_, dtype) in headers.items() if arrays[k].dtype != dtype]
    if changed:
        key = changed[0]
        raise FileFormatError(f"{path}: changed while it was read (array {key!r} is now {arrays[key].dtype}, was "
                              f"{headers[key][1]}); read it again")
    labels = [_as_labels(arrays[yk], f"{path}: array {yk!r}", FileFormatError, allow_negative=False)
              for _, yk in pairs]
    images = _scale_arrays([arrays[xk] for xk, _ in pairs],
                           f"{path}: array{'s' if len(pairs) > 1 else ''} " + ", ".join(repr(xk) for xk, _ in pairs))
    if "class_names" in arrays:
        names = _check_class_names(_npz_names(path, arrays["class_names"]), f"{path}: class_names", FileFormatError)
        _check_labels_named(labels, names, path, FileFormatError)
    else:
        names = _default_names(*labels, source=path, error=FileFormatError)
    out = tuple(Dataset(x, y, names) for x, y in zip(images, labels))
    return out if len(out) > 1 else out[0]


# -------------------------------------------------------------------------------------------- MNIST IDX
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_DIMS = 4



def _read_exact(f, n, path, what):
    data = f.read(n)
    if len(data) < n:
        raise FileFormatError(f"{path}: truncated: the file ends inside the {what} ({len(data)} of {n} bytes)")
    return data


def load_idx(path, max_bytes=None) -> np.ndarray:
    """Read an IDX file (MNIST's format; ``.gz`` allowed): magic ``00 00 type ndim``, big-endian dims, data.

    The dims are checked against ``max_bytes`` and, for a plain file, against its size *before* anything is
    allocated; a ``.gz`` is decompressed only up to the declared size plus one byte (to detect excess).

    Parameters
    ----------
    path : str
    max_bytes : int, optional
        Cap on the array (counted at 4 bytes or more per value, the float32 it becomes as images, and at twice
        its own size, the bytes read and the array made from them; default :func:`tinynet.fileio.memory_bound`).

    Returns
    -------
    ndarray of the file's type (native byte order) and shape.

    Raises
    ------
    tinynet.fileio.FileFormatError
        Missing file, bad magic, more than 4 dims, data shorter or longer than declared (truncated / trailing
        bytes), a corrupt or truncated gzip stream, or a size beyond ``max_bytes``.
    """
    path = os.fspath(path)
    max_bytes = _bound(max_bytes)
    try:
        with _open_maybe_gz(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise FileFormatError(f"{path}: not an IDX file (magic {head[:4]!r}; expected 00 00 <type> <ndim>)")
            ndim = head[3]
            if not 1 <= ndim <= _IDX_MAX_DIMS:
                raise FileFormatError(f"{path}: IDX header declares {ndim} dims (1 to {_IDX_MAX_DIMS} are read)")
            dims = struct.unpack(">" + "I" * ndim, _read_exact(f, 4 * ndim, path, "header"))
            dtype = np.dtype(_IDX_TYPES[head[2]])
            count = math.prod(dims)
            nbytes = count * dtype.itemsize
            if count * max(2 * dtype.itemsize, 4) > max_bytes:
                raise FileFormatError(f"{path}: declares shape {dims} ({_human_bytes(nbytes)} of {dtype.name}), "
                                      f"more than the cap of {_human_bytes(max_bytes)}; refused before reading")
            offset = 4 + 4 * ndim
            if not str(path).endswith(".gz"):
                held = os.fstat(f.fileno()).st_size - offset
                if held != nbytes:
                    raise FileFormatError(f"{path}: {'truncated: ' if held < nbytes else ''}declares shape {dims} "
                                          f"({nbytes} data bytes) but holds {held}")
            raw = f.read(nbytes + 1)
    except FileFormatError:
        raise
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile (bad CRC) is an OSError
        raise FileFormatError(f"{path}: corrupt or truncated {'gzip stream' if str(path).endswith('.gz') else 'file'}"
                              f" ({error})") from None
    if len(raw) != nbytes:
        raise FileFormatError(f"{path}: {'truncated: ' if len(raw) < nbytes else ''}declares shape {dims} "
                              f"({nbytes} data bytes) but holds {'more' if len(raw) > nbytes else len(raw)}")
    return np.frombuffer(raw, dtype, count=count).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder, stems):
    for name in sorted(os.listdir(folder)):
        for stem in stems:
            if name == stem or name == stem + ".gz" or name.replace(".", "-") == stem:
                return os.path.join(folder, name)
    return None


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_mnist(folder, max_bytes=None):
    """MNIST (or Fashion-MNIST) IDX files in ``folder`` (``train-images-idx3-ubyte[.gz]`` etc.).

    ``max_bytes`` (default :func:`tinynet.fileio.memory_bound`) caps the memory the load holds at its peak: the
    arrays read and the float32 images made from them, and the int64 labels; each file is refused (from its
    header) before it is read when it would not fit in what is left.

    Returns
    -------
    train, test : Dataset (images (N, 28, 28, 1) in [0, 1], scaled by :func:`scale_pixels`)

    Raises
    ------
    FileNotFoundError
        A file is missing.
    tinynet.fileio.FileFormatError
        As :func:`load_idx`; images not (N, H, W); labels not (N,) integers ≥ 0, or of
        :data:`~tinynet.data.MAX_CLASSES` or more; image and label counts that differ (both files named); a
        peak beyond ``max_bytes``.
    """
    cap = _bound(max_bytes)
    budget = cap  # what is left once the arrays read so far and the float32 images they become are counted

    def spend(nbytes, path):
        nonlocal budget
        budget -= nbytes
        if budget < 0:
            raise FileFormatError(f"{path}: the MNIST files need more than {_human_bytes(cap)} (the cap for this "
                                  f"load: the arrays read and the float32 images made from them, held at once); "
                                  f"refused before the rest is read")

    parts = []
    for part in ("train", "test"):
        img_name, lab_name = MNIST_FILES[part]
        img_path, lab_path = _find(folder, [img_name]), _find(folder, [lab_name])
        if img_path is None or lab_path is None:
            raise FileNotFoundError(f"load_mnist: {folder} lacks {img_name}[.gz] or {lab_name}[.gz]")
        images = load_idx(img_path, budget)
        spend(images.nbytes + images.size * 4, img_path)
        if images.ndim not in (3, 4):
            raise FileFormatError(f"{img_path}: images of shape {images.shape}; expected (N, H, W)")
        raw_labels = load_idx(lab_path, budget)
        spend(16 * raw_labels.size, lab_path)  # int64 labels, and the Dataset's copy of them
        labels = _as_labels(raw_labels, lab_path, FileFormatError, allow_negative=False)
        del raw_labels
        if len(images) != len(labels):
            raise FileFormatError(f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} labels")
        parts.append((img_path, images, labels, lab_path))
    xs = _scale_arrays([p[1] for p in parts], f"{parts[0][0]} and {parts[1][0]}")
    names = _default_names(*(p[2] for p in parts), source=f"{parts[0][3]} and {parts[1][3]}",
                           error=FileFormatError)
    return tuple(Dataset(x, p[2], names) for x, p in zip(xs, parts))


# -------------------------------------------------------------------------------------------- dispatch
def load_dataset(source="digits", image_size=None, test_fraction=0.2, seed=0, max_bytes=None):
    """Load ``'digits'`` or a path and return ``(train, test)``.

    A path may be an ``.npz`` file, a folder with MNIST IDX files, a folder with CIFAR-10 batches, or a
    folder of class subfolders. Sources without their own test set are split (stratified, ``seed``; see
    :func:`stratified_split`). ``image_size`` resizes every image (digits default to 32). Check the result
    with :func:`check_for_training` before training.

    ``max_bytes`` (default :func:`tinynet.fileio.memory_bound`) caps the memory the whole load holds at its
    peak: the raw arrays with the float32 images made from them, the whole set with its train and test copies
    while it is split, the images before and after resizing. What would pass it is refused before it is
    allocated (for an ``.npz``, from its headers, before any data is decompressed).

    Raises
    ------
    FileNotFoundError
        No such path.
    tinynet.fileio.FileFormatError
        As the loader for the path; a file that is not ``.npz``; a split that leaves no test image (every
        class has a single image); a peak beyond ``max_bytes``.
    """
    if isinstance(source, str) and source == "digits":
        return load_digits(image_size or 32, test_fraction, seed, max_bytes=max_bytes)
    source = os.fspath(source)
    max_bytes = _bound(max_bytes)
    if not os.path.exists(source):
        raise FileNotFoundError(f"load_dataset: no such file or folder: {source!r} (or use 'digits')")
    if not os.path.isdir(source):
        if not source.endswith(".npz"):
            raise FileFormatError(f"{source}: a file must be an .npz with x/y arrays (or give a folder)")
        result = _load_npz(source, max_bytes, split=True)  # a FIFO or a device is refused by read_npz
    elif _find(source, [MNIST_FILES["train"][0]]):
        result = load_mnist(source, max_bytes)
    elif os.path.exists(os.path.join(source, "test_batch")):
        result = load_cifar10(source, max_bytes)
    else:
        result = load_folder(source, image_size=image_size, max_bytes=max_bytes)  # its cap covers the split
    if isinstance(result, tuple):
        train, test = result
    else:
        train, test = split(result, test_fraction, seed)
        del result  # the whole set is not kept once it is split (the resizing below counts on it)
        if len(test) == 0 and len(train) and test_fraction > 0:
            raise FileFormatError(f"{source}: no test images can be set aside: each of the {train.num_classes} "
                                  f"classes has a single image (a class needs 2 or more)")
    if image_size is not None:
        held = train.x.nbytes + test.x.nbytes + train.y.nbytes + test.y.nbytes
        train_out, test_out = (resize_peak(part.x.shape, image_size,
                                           part.x.dtype == np.float32 and part.x.flags.c_contiguous)
                               for part in (train, test))
        need = max(held + train_out[1], held - train.x.nbytes + train_out[0] + test_out[1])
        if need > max_bytes:
            raise FileFormatError(f"{source}: resizing the images to {image_size} needs {_human_bytes(need)} at its "
                                  f"peak (the images before and after, and the work of one slab), more than the cap "
                                  f"of {_human_bytes(max_bytes)} for this load; refused before resizing")
        train.x = resize_images(train.x, image_size)
        test.x = resize_images(test.x, image_size)
    return train, test


__all__ = ["load_digits", "digits_peak", "DIGITS_COUNT", "NPZ_KEYS", "load_npz", "load_idx", "MNIST_FILES",
           "load_mnist", "load_dataset"]
