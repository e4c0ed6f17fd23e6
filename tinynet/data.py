"""Data: the built-in digits set (no download), loaders for a user's own files, validation, batching and augmentation.

Every loader returns NHWC ``float32`` images in [0, 1] and ``int64`` labels; :class:`Dataset` carries them
with the class names.

=========================  ==========================================================================
source                     loader
=========================  ==========================================================================
scikit-learn digits        :func:`load_digits` (1,797 real 8×8 scans, resized to 32×32, fixed split)
folder of class folders    :func:`load_folder` (``root/<class>/<image>``, read with Pillow)
``.npz`` arrays            :func:`load_npz` (keys ``x``/``y``, or ``x_train``/``y_train``/``x_test``/``y_test``,
                           optional ``class_names``; read with :func:`tinynet.fileio.read_npz`)
MNIST IDX files            :func:`load_idx`, :func:`load_mnist` (plain or ``.gz``)
CIFAR-10 python batches    :func:`load_cifar10_batch`, :func:`load_cifar10` (a restricted unpickler: no code runs)
=========================  ==========================================================================

:func:`load_dataset` picks the loader for a path; :func:`check_for_training` checks a ``(train, test)`` pair
before training (errors for what cannot train, warnings for what trains badly). Resizing is bilinear with
half-pixel centres (as Pillow and OpenCV), done for a whole batch at once as two small matrix products:
``Y = R_h X R_wᵀ``.

Pixel values
------------
Every loader scales pixels by the same rule (:func:`scale_pixels`), from the range their type or values
really have, never by clipping:

- ``bool`` (Pillow mode ``'1'``): 0 or 1.
- ``uint8`` (modes ``'L'``, ``'RGB'``, ``'P'``, ...): ÷ 255.
- ``uint16`` (modes ``'I;16'``, ``'I;16B'``: 16-bit PNG, TIFF): ÷ 65535.
- Pillow mode ``'I'`` (32-bit integers): ÷ 65535 when every value lies in [0, 65535] (Pillow keeps 16-bit
  PGM data there); other values are refused.
- Floats (``'F'`` TIFFs, float arrays) and the other integer types in arrays (int8/16/32/64, uint32/64):
  kept when within [0, 1]; ÷ 255 when within [0, 255] with a maximum above 1 (8-bit values held in a wider
  type); anything else (negative, above 255) is refused, naming the range found.
- NaN or ±inf: refused, naming the file and the count.

In ``.npz``, IDX and CIFAR files the rule is decided once for the whole array (train and test together);
in a folder, for each image file. Colour is converted in floating point after scaling (grey = 0.299 R +
0.587 G + 0.114 B, as Pillow's ``'L'``; grey to RGB repeats the channel), so 16-bit precision survives; an
alpha channel is dropped (not composited); palette images (``'P'``) are expanded to RGB; ``'CMYK'``,
``'YCbCr'``, ``'LAB'`` and ``'HSV'`` go through Pillow's ``convert('RGB')`` (8-bit data, nothing to lose).
Multi-frame files (GIF, TIFF) give their first frame.

Errors
------
A file that is missing, truncated, corrupt, of the wrong type or shape, or unsafe raises
:class:`tinynet.fileio.FileFormatError` (a ``ValueError``) whose message starts with the file's path and says
what is wrong; nothing is skipped silently (only files without an image extension, and hidden files and
folders starting with ``.``, are not images). Every reader bounds its work before it allocates:
``max_bytes`` (default :func:`tinynet.fileio.memory_bound`, half the machine's memory) caps the float32
images a load may build; IDX and ``.npz`` headers are checked against it and against the file's size
before any data is read or decompressed (a ``.gz`` is inflated only up to its declared size plus one byte).
A CIFAR file is capped at :data:`CIFAR_MAX_FILE_BYTES`; its pickle's opcodes and memo indices are checked
before it is unpickled, and realising it visits each shared object once, nests at most
:data:`PICKLE_MAX_DEPTH` deep and builds no more array bytes than the file holds.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .fileio import FileFormatError, memory_bound, npz_headers, read_npz

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _bound(max_bytes) -> int:
    return memory_bound() if max_bytes is None else int(max_bytes)


# -------------------------------------------------------------------------------------------- labels, names
def _from_one_hot(y, source, error):
    """Class indices from 2-D one-hot rows (each row a single 1, the rest 0), or ``error``."""
    values_ok = bool(np.all((y == 0) | (y == 1)))
    if not values_ok or not np.all(y.sum(axis=1) == 1):
        raise error(f"{source}: labels of shape {y.shape} are 2-D but not one-hot (each row one 1 and the rest 0); "
                    f"store class indices of shape (N,) instead")
    return np.argmax(y, axis=1)


def _as_labels(y, source="labels", error=ValueError, allow_negative=True) -> np.ndarray:
    """``y`` as int64 class indices (N,).

    Integers and bools are kept; floats must be finite whole numbers; 2-D labels are accepted as (N, 1) or as
    valid one-hot rows (converted with argmax). Anything else raises ``error`` with ``source`` in the message.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise error(f"{source}: labels of dtype {y.dtype}; labels must be integer class indices 0..K-1 "
                    f"(store the names separately, e.g. as class_names)")
    if y.ndim == 2:
        y = y[:, 0] if y.shape[1] == 1 else _from_one_hot(y, source, error)
    if y.ndim != 1:
        raise error(f"{source}: labels must have shape (N,), got {y.shape}")
    if y.dtype.kind == "f" and y.size:
        finite = np.isfinite(y)
        if not finite.all():
            raise error(f"{source}: {int(np.count_nonzero(~finite))} label(s) are NaN or infinite")
        whole = y == np.round(y)
        if not whole.all():
            i = int(np.argmin(whole))
            raise error(f"{source}: labels must be whole numbers (class indices); label {i} is {y[i]!r}")
        if np.abs(y).max() >= 2.0 ** 62:
            raise error(f"{source}: label values up to {np.abs(y).max():g} are not class indices")
    if y.dtype == np.uint64 and y.size and y.max() > np.iinfo(np.int64).max:
        raise error(f"{source}: label values up to {int(y.max())} are not class indices")
    y = y.astype(np.int64)
    if not allow_negative and y.size and y.min() < 0:
        bad = y[y < 0]
        raise error(f"{source}: {bad.size} label(s) are negative (e.g. {int(bad[0])}); labels are class indices "
                    f"0..K-1")
    return y


def _check_class_names(names, source="class_names", error=ValueError) -> list:
    """``names`` as a list of non-empty, distinct strings (kept exactly as given: no stripping or escaping)."""
    names = list(names)
    seen = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise error(f"{source}: class name {i} is a {type(name).__name__} ({name!r}), not a string")
        if name == "":
            raise error(f"{source}: class name {i} is empty")
        if name in seen:
            raise error(f"{source}: class name {name!r} is given twice (classes {seen[name]} and {i})")
        seen[name] = i
    return [str(n) for n in names]


@dataclass
class Dataset:
    """Images and labels.

    Attributes
    ----------
    x : float32 ndarray (N, H, W, C)
        ``(N, H, W)`` is accepted and becomes ``(N, H, W, 1)``.
    y : int64 ndarray (N,)
        Integer labels; whole-number floats are cast, other floats raise ``ValueError``; 2-D one-hot labels are
        converted with argmax.
    class_names : list of str
        Non-empty, distinct strings, kept as given (a name may hold any character: print it escaped). When
        left out, ``['0', ..., str(max(y))]``: labels with gaps then give classes with no images, which
        :func:`check_for_training` reports.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list = field(default_factory=list)

    def __post_init__(self):
        self.x = np.asarray(self.x)
        self.y = _as_labels(self.y, "Dataset")
        if self.x.ndim == 3:
            self.x = self.x[..., None]
        if self.x.ndim != 4:
            raise ValueError(f"Dataset: images must be (N, H, W) or (N, H, W, C), got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise ValueError(f"Dataset: {len(self.x)} images but {len(self.y)} labels")
        if self.class_names is not None and len(self.class_names):
            self.class_names = _check_class_names(self.class_names, "Dataset: class_names")
        else:
            k = max(int(self.y.max()) + 1, 0) if len(self.y) else 0
            self.class_names = [str(i) for i in range(k)]

    def __len__(self):
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def subset(self, index) -> "Dataset":
        return Dataset(self.x[index], self.y[index], list(self.class_names))


def _default_names(*label_arrays) -> list:
    """``['0', ..., str(K - 1)]`` for the largest label over all arrays (so train and test share one list)."""
    top = max((int(y.max()) for y in label_arrays if len(y)), default=-1)
    return [str(i) for i in range(top + 1)]


# -------------------------------------------------------------------------------------------- pixel scaling
def _value_range(x, source):
    """``(min, max)`` of ``x`` as floats; NaN or infinite values raise :class:`FileFormatError`."""
    if x.size == 0:
        return 0.0, 0.0
    lo, hi = x.min(), x.max()
    if x.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise FileFormatError(f"{source}: {bad} pixel value(s) are NaN or infinite")
    return float(lo), float(hi)


def _type_divisor(dtype):
    """The divisor fixed by the dtype alone (bool, uint8, uint16), or None when the values decide."""
    if dtype.kind == "b":
        return 1.0
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return 255.0 if dtype.itemsize == 1 else 65535.0
    return None


def _value_divisor(lo, hi, dtype, source):
    """The divisor for floats and wide integers from their range: 1 within [0, 1], 255 within [0, 255]."""
    if lo < 0:
        raise FileFormatError(f"{source}: pixel values lie in [{lo:g}, {hi:g}] ({dtype}); negative values are not "
                              f"pixels: give [0, 1] floats, [0, 255] 8-bit or [0, 65535] uint16 values")
    if hi <= 1:
        return 1.0
    if hi <= 255:
        return 255.0
    raise FileFormatError(f"{source}: pixel values lie in [{lo:g}, {hi:g}] ({dtype}); expected [0, 1], or "
                          f"[0, 255] for 8-bit values (16-bit values: store them as uint16)")


def _scale_arrays(arrays, source) -> list:
    """Scale several arrays (e.g. train and test images) by one rule, decided from all of them."""
    arrays = [np.asarray(a) for a in arrays]
    for a in arrays:
        if a.dtype.kind not in "biuf":
            raise FileFormatError(f"{source}: pixels of dtype {a.dtype} are not numbers an image holds "
                                  f"(expected uint8, uint16, bool or float)")
    ranges = [_value_range(a, source) for a in arrays if _type_divisor(a.dtype) is None and a.size]
    shared = None
    if ranges:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        dtypes = sorted({str(a.dtype) for a in arrays if _type_divisor(a.dtype) is None})
        shared = _value_divisor(lo, hi, "/".join(dtypes), source)
    out = []
    for a in arrays:
        divisor = _type_divisor(a.dtype) or shared or 1.0
        x = a.astype(np.float32)
        if divisor != 1.0:
            x /= np.float32(divisor)
        out.append(x)
    return out


def scale_pixels(x, source="images") -> np.ndarray:
    """Pixel values as float32 in [0, 1], scaled from the range they really have (the rule every loader uses).

    Parameters
    ----------
    x : array_like
        Images of any shape.
    source : str
        Names the file (or array) in error messages.

    Returns
    -------
    float32 ndarray, same shape
        ``bool`` → 0/1; ``uint8`` ÷ 255; ``uint16`` ÷ 65535; floats and other integer types kept when within
        [0, 1], ÷ 255 when within [0, 255] with a maximum above 1.

    Raises
    ------
    tinynet.fileio.FileFormatError
        NaN or infinite values (with their count), negative values, values above 255 in a float or wide integer
        type, or a dtype that is not a number; the message starts with ``source`` and gives the range found.
    """
    return _scale_arrays([x], source)[0]


# -------------------------------------------------------------------------------------------- resizing
def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bilinear weights, half-pixel centres, edges clamped."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def _size_pair(size, who="image_size"):
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ValueError(f"{who} must be a positive int or a pair (h, w) of them, got {size!r}")
    return int(h), int(w)


def resize_images(x, size) -> np.ndarray:
    """Bilinearly resize a batch (N, H, W, C) to (N, h, w, C) with ``size = h`` or ``(h, w)``.

    For upsampling this matches Pillow's ``Image.resize(..., BILINEAR)``; for downsampling it interpolates
    (no area filter).
    """
    h, w = _size_pair(size)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:3] == (h, w):
        return x
    rh = _bilinear_matrix(x.shape[1], h).astype(np.float32)
    rw = _bilinear_matrix(x.shape[2], w).astype(np.float32)
    return np.einsum("ih,nhwc,jw->nijc", rh, x, rw, optimize=True).astype(np.float32)


# -------------------------------------------------------------------------------------------- splitting
def stratified_split(y, test_fraction=0.2, seed=0):
    """Indices ``(train, test)`` with each class split in the same proportion, fixed by ``seed``.

    A class of ``n`` images puts ``round(n · test_fraction)`` of them in the test set, but at least one when
    ``n ≥ 2`` and ``test_fraction > 0`` (so every class is measured) and never all of them (so every class is
    learnt: no class ends with zero training images). A class with a single image goes to the training set;
    it has no test image (:func:`check_for_training` warns about it).

    Raises
    ------
    ValueError
        ``test_fraction`` outside [0, 1).
    """
    if not (isinstance(test_fraction, (int, float, np.floating)) and 0 <= test_fraction < 1):
        raise ValueError(f"stratified_split: test_fraction must be in [0, 1), got {test_fraction!r}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, test = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = int(round(n * test_fraction))
        if n >= 2 and test_fraction > 0:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def split(dataset: Dataset, test_fraction=0.2, seed=0):
    """Split a :class:`Dataset` into stratified ``(train, test)`` datasets (see :func:`stratified_split`)."""
    tr, te = stratified_split(dataset.y, test_fraction, seed)
    return dataset.subset(tr), dataset.subset(te)


# -------------------------------------------------------------------------------------------- validation
def _runs(indices, limit=6) -> str:
    """``[3, 4, 5, 9]`` → ``'3..5, 9'`` (at most ``limit`` runs, then '...')."""
    indices = [int(i) for i in indices]
    runs, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            runs.append(f"{start}" if start == i else f"{start}..{i}")
            start = None
    return ", ".join(runs[:limit]) + (", ..." if len(runs) > limit else "")


def _describe(indices, names, limit=5) -> str:
    """Classes by index, with their names when they are not just the index."""
    indices = [int(i) for i in indices]
    if all(i < len(names) and names[i] == str(i) for i in indices):
        return "class" + ("es " if len(indices) > 1 else " ") + _runs(indices)
    shown = ", ".join(f"{i} ({names[i]!r})" if i < len(names) else str(i) for i in indices[:limit])
    return "class" + ("es " if len(indices) > 1 else " ") + shown + (", ..." if len(indices) > limit else "")


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _nonfinite_count(x) -> int:
    """Number of NaN/inf values (a float64 sum first, so finite data costs one pass and no temporary)."""
    if x.dtype.kind not in "fc" or x.size == 0:
        return 0
    if np.isfinite(np.sum(x, dtype=np.float64)):
        return 0
    return int(np.count_nonzero(~np.isfinite(x)))


def _check_labels(ds, part):
    y = np.asarray(ds.y)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{part}: labels have dtype {y.dtype}; they must be integer class indices")
    if y.ndim != 1 or len(y) != len(ds.x):
        raise ValueError(f"{part}: {len(ds.x)} images but labels of shape {y.shape}")
    if len(y) and y.min() < 0:
        bad = y[y < 0]
        raise ValueError(f"{part}: {_plural(bad.size, 'label')} {'is' if bad.size == 1 else 'are'} negative "
                         f"(e.g. {int(bad[0])}); labels are class indices 0..K-1")
    return y


def check_for_training(train, test=None, batch_size=None) -> list:
    """Check a ``(train, test)`` pair before training: raise for what cannot train, return warnings for the rest.

    Parameters
    ----------
    train : Dataset
    test : Dataset, optional
        Checked against ``train`` when given.
    batch_size : int, optional
        Checked against the number of training images when given.

    Returns
    -------
    list of str
        Warnings, one sentence each: a class with a single training image, classes with no test images, a
        batch larger than the training set.

    Raises
    ------
    ValueError
        With a message naming the part (``train``/``test``) and what is wrong: no training images; labels that
        are negative or not integers; labels with no class name; fewer than 2 classes among the training
        labels; a class in 0..K-1 with no training image (for labels far from the others, e.g. one 255 among
        0..9, the message names the label and how many images have it); an empty test set; test labels that no
        training image has; images of another shape in ``test``; NaN or infinite pixels; class names that differ
        between ``train`` and ``test``.
    """
    warnings = []
    if len(train) == 0:
        raise ValueError("train: no training images")
    y = _check_labels(train, "train")
    names = list(train.class_names)
    k = len(names)
    if y.max() >= k:
        bad = np.unique(y[y >= k])
        raise ValueError(f"train: label(s) {_runs(bad)} have no class name (there are {k} class names)")
    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero(counts)
    if present.size < 2:
        c = int(present[0])
        raise ValueError(f"train: all {len(y)} images have label {c}" + (f" ({names[c]!r})" if names[c] != str(c)
                                                                           else "")
                         + "; a classifier needs at least 2 classes")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        message = (f"train: {empty.size} of the {k} classes have no training images ({_describe(empty, names)})")
        gaps = np.diff(present)
        if gaps.max() > 1:
            cut = int(np.argmax(gaps)) + 1
            low, high = present[:cut], present[cut:]
            if counts[high].sum() < counts[low].sum():
                far = ", ".join(f"label {int(v)} ({_plural(int(counts[v]), 'image')})" for v in high[:3])
                message += (f"; {far}" + (", ..." if high.size > 3 else "")
                            + f" lie{'s' if high.size == 1 else ''} far outside the others ({_runs(low)}): a stray "
                              f"or 'ignore' label? Remove or relabel those images")
        raise ValueError(message + ". Labels must run 0..K-1 with every class present")
    bad = _nonfinite_count(train.x)
    if bad:
        raise ValueError(f"train: {_plural(bad, 'pixel value')} {'is' if bad == 1 else 'are'} NaN or infinite")
    single = np.flatnonzero(counts == 1)
    if single.size:
        warnings.append(f"train: {_describe(single, names)} {'have' if single.size > 1 else 'has'} a single "
                        f"training image")
    if batch_size is not None and batch_size > len(y):
        warnings.append(f"batch size {batch_size} is larger than the {len(y)} training images: each epoch is a "
                        f"single step")
    if test is None:
        return warnings
    if len(test) == 0:
        raise ValueError("test: no test images (nothing to measure the model on); a class needs 2 or more images "
                         "for one to be set aside")
    if tuple(test.x.shape[1:]) != tuple(train.x.shape[1:]):
        raise ValueError(f"test: images of {tuple(test.x.shape[1:])} but the training images are "
                         f"{tuple(train.x.shape[1:])}")
    ty = _check_labels(test, "test")
    if len(test.class_names) == k and list(test.class_names) != names:
        raise ValueError("test: the class names differ from the training set's (the same label would mean "
                         "different classes)")
    unseen = ty[(ty >= k) | (counts[np.minimum(ty, k - 1)] == 0)]
    if unseen.size:
        values, n = np.unique(unseen, return_counts=True)
        shown = ", ".join(f"{int(v)} ({_plural(int(c), 'image')})" for v, c in zip(values[:5], n[:5]))
        raise ValueError(f"test: label(s) {shown}{', ...' if values.size > 5 else ''} that no training image has")
    bad = _nonfinite_count(test.x)
    if bad:
        raise ValueError(f"test: {_plural(bad, 'pixel value')} {'is' if bad == 1 else 'are'} NaN or infinite")
    untested = np.flatnonzero(np.bincount(ty, minlength=k) == 0)
    if untested.size:
        warnings.append(f"test: {_describe(untested, names)} {'have' if untested.size > 1 else 'has'} no test "
                        f"images; {'their' if untested.size > 1 else 'its'} accuracy is not measured")
    return warnings


# -------------------------------------------------------------------------------------------- digits
def load_digits(image_size=32, test_fraction=0.2, seed=0):
    """scikit-learn's handwritten digits (1,797 8×8 grey scans, 16 levels), shipped with scikit-learn.

    Parameters
    ----------
    image_size : int, default 32
        The 8×8 images are resized bilinearly to ``image_size``×``image_size``.
    test_fraction : float, default 0.2
    seed : int, default 0
        Fixes the stratified train/test split (359 test images for the defaults).

    Returns
    -------
    train, test : Dataset
        Images (N, image_size, image_size, 1) in [0, 1]: white strokes on black.
    """
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = digits.images.astype(np.float32)[..., None] / 16.0
    x = np.clip(resize_images(x, image_size), 0.0, 1.0)
    full = Dataset(x, digits.target, [str(i) for i in range(10)])
    return split(full, test_fraction, seed)


# -------------------------------------------------------------------------------------------- image files
#: Pillow modes whose pixels are read as they are (``'I;16*'`` too); others are converted first.
_NATIVE_MODES = ("1", "L", "LA", "I", "F", "RGB", "RGBA", "RGBX")
#: Pillow modes converted before reading (8-bit data: nothing is lost).
_CONVERTED_MODES = {"P": None, "PA": "RGBA", "RGBa": "RGBA", "La": "LA"}


def _open_image_pixels(path, max_bytes, want_channels=None):
    """Decode one image file with Pillow; return its raw pixels (H, W) or (H, W, C) and Pillow's mode.

    The float32 size is checked against ``max_bytes`` from the header, before the pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FileFormatError(f"{path}: is a folder, not an image")
    if os.path.getsize(path) == 0:
        raise FileFormatError(f"{path}: empty file (0 bytes), not an image")
    try:
        with Image.open(path) as img:
            need = img.size[0] * img.size[1] * max(len(img.getbands()), want_channels or 1) * 4
            if need > max_bytes:
                raise FileFormatError(f"{path}: a {img.size[0]}x{img.size[1]} image needs {_human_bytes(need)} as "
                                      f"float32, more than the cap of {_human_bytes(max_bytes)}")
            img.load()
            mode = img.mode
            if mode in _CONVERTED_MODES:
                target = _CONVERTED_MODES[mode] or ("RGBA" if "transparency" in img.info else "RGB")
                img = img.convert(target)
            elif mode not in _NATIVE_MODES and not mode.startswith("I;16"):
                img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV: 8-bit, converted by Pillow
            return np.asarray(img), mode
    except (MemoryError, FileFormatError):
        raise
    except PermissionError:
        raise FileFormatError(f"{path}: cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise FileFormatError(f"{path}: not an image Pillow can read (unknown format, or a corrupt header)") from None
    except Exception as error:  # Pillow raises many types on damaged files (OSError, SyntaxError, ValueError, ...)
        raise FileFormatError(f"{path}: corrupt or truncated image ({type(error).__name__}: {error})") from None


def _image_to_unit(a, mode, path) -> np.ndarray:
    """Raw Pillow pixels → float32 (H, W, C) in [0, 1], C = 1 or 3 (alpha and padding channels dropped)."""
    if mode == "I":  # Pillow's 32-bit container for 16-bit PGM/PNG data
        lo, hi = _value_range(a, path)
        if lo < 0 or hi > 65535:
            raise FileFormatError(f"{path}: 32-bit integer pixels in [{lo:g}, {hi:g}]; only values in [0, 65535] "
                                  f"(16-bit data) are read: save the image as 16-bit or as float")
        x = a.astype(np.float32) / np.float32(65535)
    else:
        x = scale_pixels(a, path)
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] == 2:    # LA: drop alpha
        x = x[..., :1]
    elif x.shape[-1] == 4:  # RGBA / RGBX: drop alpha (or padding)
        x = x[..., :3]
    return x


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert('L')


def _to_channels(x, channels):
    if channels is None or x.shape[-1] == channels:
        return x
    if channels == 1:
        return (x @ _LUMA)[..., None].astype(np.float32)
    return np.repeat(x, 3, axis=-1)


def _resize_one(x, size):
    """Resize one (H, W, C) float image with Pillow's bilinear filter, channel by channel in mode 'F'."""
    from PIL import Image

    h, w = size
    if x.shape[:2] == (h, w):
        return x
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c])).resize((w, h), Image.BILINEAR))
              for c in range(x.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def read_image(path, image_size=None, channels=None, max_bytes=None) -> np.ndarray:
    """Read one image with Pillow as float32 (H, W, C) in [0, 1], scaled from its real range.

    Pixels are read as numbers first and scaled as the module's table says (16-bit ÷ 65535, float TIFFs kept
    or ÷ 255, ...); colour conversion and resizing are done in floating point, so nothing is clipped to 8 bits.

    Parameters
    ----------
    path : str
    image_size : int or (h, w), optional
        Resize (Pillow's bilinear filter, in float) to this size.
    channels : {None, 1, 3}
        1: grey (0.299 R + 0.587 G + 0.114 B), 3: RGB (grey repeated); None keeps grey images grey
        (modes '1', 'L', 'LA', 'I', 'I;16*', 'F') and makes every other image RGB.
    max_bytes : int, optional
        Refuse an image whose float32 pixels would take more (default :func:`tinynet.fileio.memory_bound`).

    Returns
    -------
    float32 ndarray (H, W, C)

    Raises
    ------
    tinynet.fileio.FileFormatError
        The file is missing, empty, not an image, truncated or corrupt, too large, or holds pixel values that
        cannot be scaled (NaN, negative, out of range); the message starts with the path.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"read_image: channels must be None, 1 or 3, got {channels!r}")
    size = None if image_size is None else _size_pair(image_size)
    path = os.fspath(path)
    a, mode = _open_image_pixels(path, _bound(max_bytes), channels)
    x = _to_channels(_image_to_unit(a, mode, path), channels)
    return _resize_one(x, size) if size is not None else x


def _image_files(folder):
    """The image files of a folder, sorted (hidden files and files of other extensions are not images)."""
    return sorted(f for f in os.listdir(folder)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def load_folder(root, image_size=None, channels=None, max_bytes=None) -> Dataset:
    """A folder with one subfolder per class: ``root/<class name>/<image file>``.

    Classes are the subfolder names in sorted order, kept exactly as they are (control characters and any
    Unicode included). Hidden folders and files (names starting with ``.``) and files without an image
    extension are not read; every other file must be a readable image.

    Parameters
    ----------
    root : str
    image_size : int or (h, w), optional
        Resize every image; needed when they differ in size.
    channels : {None, 1, 3}
        As :func:`read_image`; None: RGB if any image is colour (grey ones are repeated), else grey.
    max_bytes : int, optional
        Cap on the float32 images (default :func:`tinynet.fileio.memory_bound`).

    Raises
    ------
    tinynet.fileio.FileFormatError
        ``root`` is not a folder or has no class subfolders; a class folder holds no images; an image cannot
        be read (see :func:`read_image`; the error names the file); images differ in size and no
        ``image_size`` is given; the images would exceed ``max_bytes``.
    """
    root = os.fspath(root)
    budget = _bound(max_bytes)
    if not os.path.isdir(root):
        raise FileFormatError(f"{root}: not a folder")
    try:
        entries = sorted(os.listdir(root))
    except OSError as error:
        raise FileFormatError(f"{root}: cannot list the folder ({error.strerror})") from None
    classes = [d for d in entries if not d.startswith(".") and os.path.isdir(os.path.join(root, d))]
    if not classes:
        raise FileFormatError(f"{root}: no class subfolders (expected {root}/<class name>/<image files>)")
    images, labels, files, total = [], [], [], 0
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        try:
            names = _image_files(folder)
        except OSError as error:
            raise FileFormatError(f"{folder}: cannot list the folder ({error.strerror})") from None
        if not names:
            raise FileFormatError(f"{folder}: the class folder {name!r} holds no images "
                                  f"({', '.join(IMAGE_EXTENSIONS)})")
        for fname in names:
            path = os.path.join(folder, fname)
            a = read_image(path, image_size, channels, max_bytes=budget)
            total += a.size * 4
            if total > budget:
                raise FileFormatError(f"{root}: the images need more than {_human_bytes(budget)} as float32 (the "
                                      f"cap for this load); pass image_size to make them smaller")
            images.append(a)
            labels.append(label)
            files.append(path)
    if channels is None and any(a.shape[-1] == 3 for a in images):
        images = [_to_channels(a, 3) for a in images]
    first = images[0].shape
    other = next((i for i, a in enumerate(images) if a.shape[:2] != first[:2]), None)
    if other is not None:
        raise FileFormatError(f"{root}: images of different sizes ({files[0]} is {first[0]}x{first[1]}, "
                              f"{files[other]} is {images[other].shape[0]}x{images[other].shape[1]}); "
                              f"pass image_size (--image-size) to resize them all")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), classes)


# -------------------------------------------------------------------------------------------- .npz
NPZ_KEYS = ("x", "y", "x_train", "y_train", "x_test", "y_test", "class_names")


def _npz_layout(path, headers, max_bytes):
    """Check the arrays' names, shapes and dtypes from the headers alone; return the (x, y) key pairs."""
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
    need = 0
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
        need += math.prod(xs) * 4 + ys[0] * 8
    if "class_names" in headers:
        shape, dtype = headers["class_names"]
        if len(shape) != 1 or dtype.kind not in "US":
            raise FileFormatError(f"{path}: array 'class_names' has shape {shape} and dtype {dtype}; it must be a "
                                  f"1-D array of strings")
    if need > max_bytes:
        raise FileFormatError(f"{path}: the images need {_human_bytes(need)} as float32, more than the cap of "
                              f"{_human_bytes(max_bytes)} for this load; refused before reading them")
    return pairs


def _npz_names(path, array):
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
        Cap on the float32 images and labels the load builds (default :func:`tinynet.fileio.memory_bound`).

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
        than the labels need, pixel values that cannot be scaled, or a size beyond ``max_bytes``.
    """
    path = os.fspath(path)
    max_bytes = _bound(max_bytes)
    headers = npz_headers(path, allowed=NPZ_KEYS, max_bytes=max_bytes)
    pairs = _npz_layout(path, headers, max_bytes)
    arrays = read_npz(path, allowed=NPZ_KEYS, max_bytes=max_bytes)
    labels = [_as_labels(arrays[yk], f"{path}: array {yk!r}", FileFormatError, allow_negative=False)
              for _, yk in pairs]
    images = _scale_arrays([arrays[xk] for xk, _ in pairs],
                           f"{path}: array{'s' if len(pairs) > 1 else ''} " + ", ".join(repr(xk) for xk, _ in pairs))
    if "class_names" in arrays:
        names = _check_class_names(_npz_names(path, arrays["class_names"]), f"{path}: class_names", FileFormatError)
        top = max((int(y.max()) for y in labels if len(y)), default=-1)
        if top >= len(names):
            raise FileFormatError(f"{path}: {len(names)} class_names but the labels go up to {top} "
                                  f"({top + 1} classes)")
    else:
        names = _default_names(*labels)
    out = tuple(Dataset(x, y, names) for x, y in zip(images, labels))
    return out if len(out) > 1 else out[0]


# -------------------------------------------------------------------------------------------- MNIST IDX
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_DIMS = 4


def _open_maybe_gz(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


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
        Cap on the array (counted at 4 bytes or more per value, the float32 it becomes as images; default
        :func:`tinynet.fileio.memory_bound`).

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
    if not os.path.isfile(path):
        raise FileFormatError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a file")
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
            if count * max(dtype.itemsize, 4) > max_bytes:
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

    Returns
    -------
    train, test : Dataset (images (N, 28, 28, 1) in [0, 1], scaled by :func:`scale_pixels`)

    Raises
    ------
    FileNotFoundError
        A file is missing.
    tinynet.fileio.FileFormatError
        As :func:`load_idx`; images not (N, H, W); labels not (N,) integers ≥ 0; image and label counts that
        differ (both files named).
    """
    budget = _bound(max_bytes)
    parts = []
    for part in ("train", "test"):
        img_name, lab_name = MNIST_FILES[part]
        img_path, lab_path = _find(folder, [img_name]), _find(folder, [lab_name])
        if img_path is None or lab_path is None:
            raise FileNotFoundError(f"load_mnist: {folder} lacks {img_name}[.gz] or {lab_name}[.gz]")
        images = load_idx(img_path, budget)
        budget -= images.size * 4
        if images.ndim not in (3, 4):
            raise FileFormatError(f"{img_path}: images of shape {images.shape}; expected (N, H, W)")
        labels = _as_labels(load_idx(lab_path, max(budget, 0)), lab_path, FileFormatError, allow_negative=False)
        if len(images) != len(labels):
            raise FileFormatError(f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} labels")
        parts.append((img_path, images, labels))
    xs = _scale_arrays([p[1] for p in parts], f"{parts[0][0]} and {parts[1][0]}")
    names = _default_names(*(p[2] for p in parts))
    return tuple(Dataset(x, p[2], names) for x, p in zip(xs, parts))


# -------------------------------------------------------------------------------------------- CIFAR
#: Cap on one CIFAR batch file (after gzip); CIFAR-10 batches are 31 MB, CIFAR-100's training file 155 MB.
CIFAR_MAX_FILE_BYTES = 256 << 20
#: Containers nest at most this deep in a pickle this module reads (a CIFAR batch needs 2: dict → list → int).
PICKLE_MAX_DEPTH = 8

#: The pickle opcodes a data file may use: values, containers, memo, and the globals/REDUCE/BUILD that NumPy
#: arrays need (resolved by :class:`RestrictedUnpickler` to stand-ins). Refused: persistent ids, extension
#: registry, INST/OBJ/NEWOBJ (class instantiation) and out-of-band buffers.
_PICKLE_OPCODES = frozenset("""
    MARK STOP POP POP_MARK DUP FLOAT INT BININT BININT1 BININT2 LONG LONG1 LONG4 STRING BINSTRING SHORT_BINSTRING
    UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 NONE NEWTRUE
    NEWFALSE BINFLOAT EMPTY_LIST APPEND APPENDS LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT
    SETITEM SETITEMS GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE PROTO FRAME GLOBAL STACK_GLOBAL REDUCE
    BUILD
""".split())


class _Budget:
    """What :func:`_realise` may still build: array bytes and container items."""

    def __init__(self, array_bytes, items):
        self.array_bytes, self.items = int(array_bytes), int(items)

    def spend_bytes(self, n):
        self.array_bytes -= n
        if self.array_bytes < 0:
            raise pickle.UnpicklingError("the pickle's arrays add up to more bytes than the file holds (shared "
                                         "buffers?); refused")

    def spend_items(self, n):
        self.items -= n
        if self.items < 0:
            raise pickle.UnpicklingError("the pickle holds more items than its size allows; refused")


class _ArrayStub:
    """Stands in for ``numpy.ndarray`` while unpickling; holds the shape, dtype and raw bytes it is given."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_array(self, budget=None):
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("CIFAR loader: an array without a valid (version, shape, dtype, order, "
                                         "data) state")
        _version, shape, dtype, fortran, raw = state
        if isinstance(raw, list):  # object arrays pickle their items as a list: refuse
            raise pickle.UnpicklingError("CIFAR loader: object arrays are not allowed")
        if isinstance(raw, str):  # Python 2 string read with encoding='latin1'
            try:
                raw = raw.encode("latin1")
            except UnicodeEncodeError:
                raise pickle.UnpicklingError("CIFAR loader: array data is text, not bytes") from None
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"CIFAR loader: array data is a {type(raw).__name__}, not bytes")
        if not isinstance(dtype, _DtypeStub):
            raise pickle.UnpicklingError("CIFAR loader: an array without a numeric dtype")
        if not (isinstance(shape, tuple) and len(shape) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f"CIFAR loader: bad array shape {shape!r}"[:200])
        dt = dtype.to_dtype()
        if math.prod(shape) * dt.itemsize != len(raw):
            raise pickle.UnpicklingError(f"CIFAR loader: an array of shape {shape} {dt} needs "
                                         f"{math.prod(shape) * dt.itemsize} bytes but holds {len(raw)}")
        if budget is not None:
            budget.spend_bytes(len(raw))
        return np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if fortran else "C").copy()


_DTYPE_CODE = re.compile(r"[<>|=]?[biuf][0-9]{0,2}")


class _DtypeStub:
    """Stands in for ``numpy.dtype``: only plain numeric type codes become real dtypes."""

    def __init__(self, code, *args):
        if isinstance(code, bytes):
            code = code.decode("ascii", "replace")
        if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
            raise pickle.UnpicklingError(f"CIFAR loader: dtype {code!r} is not allowed"[:200])
        try:
            np.dtype(code)
        except TypeError:
            raise pickle.UnpicklingError(f"CIFAR loader: dtype {code!r} is not allowed") from None
        self.code, self.order = code, "="

    def __setstate__(self, state):
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "="
        order = order.decode("ascii", "replace") if isinstance(order, bytes) else order
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"CIFAR loader: dtype byte order {order!r} is not allowed"[:200])
        self.order = order

    def to_dtype(self):
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


def _reconstruct(cls, shape, dtype_code):
    if cls is not _ArrayStub:
        raise pickle.UnpicklingError("CIFAR loader: unexpected _reconstruct target")
    return _ArrayStub()


def _frombuffer(buffer, dtype, shape, order):
    stub = _ArrayStub()
    stub.state = (1, shape, dtype, order == "F", buffer)
    return stub


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("CIFAR loader: unexpected _codecs.encode call")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise pickle.UnpicklingError("CIFAR loader: _codecs.encode of non-latin-1 text") from None


def _empty_bytes(*args):
    """``bytes()``: how protocol 2 pickles ``b""``; anything else is refused."""
    if args:
        raise pickle.UnpicklingError("CIFAR loader: unexpected bytes(...) call")
    return b""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing: the only globals it resolves are harmless stand-ins of its own.

    CIFAR-10's python batches are pickled dicts of lists, bytes and NumPy uint8 arrays. A NumPy array pickles
    as ``numpy.core.multiarray._reconstruct(ndarray, ...)`` plus a state tuple holding its raw bytes; here
    those names map to :class:`_ArrayStub` / :class:`_DtypeStub`, which only record numbers and bytes and
    build the array with ``np.frombuffer``. Any other global (``os.system``, ...) raises
    ``pickle.UnpicklingError``, so a malicious file cannot run code. Use it through :func:`safe_unpickle`,
    which also bounds the work (opcodes and memo indices checked first, nesting depth, array bytes).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _ArrayStub,
        ("numpy", "dtype"): _DtypeStub,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}"[:200]) from None


def _check_opcodes(data: bytes) -> int:
    """Walk the pickle's opcodes without running them; return their count.

    Refuses opcodes outside :data:`_PICKLE_OPCODES`, truncated arguments, and memo indices out of order (the C
    unpickler sizes its memo table by the largest index: one 5-byte ``LONG_BINPUT`` could ask for 32 GiB).
    """
    count = puts = 0
    try:
        for op, arg, pos in pickletools.genops(data):
            count += 1
            if op.name not in _PICKLE_OPCODES:
                raise pickle.UnpicklingError(f"pickle opcode {op.name} (at byte {pos}) is not allowed in a data file")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not 0 <= arg <= puts:
                    raise pickle.UnpicklingError(f"memo index {arg} at byte {pos} is out of order (next is {puts})")
                puts += arg == puts
            elif op.name == "MEMOIZE":
                puts += 1
    except pickle.UnpicklingError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, struct.error, UnicodeDecodeError, OverflowError) as error:
        raise pickle.UnpicklingError(f"not a valid pickle ({error})"[:300]) from None
    return count


def _load_restricted(data: bytes):
    """Check the opcodes, then unpickle with :class:`RestrictedUnpickler`; return the raw object and op count."""
    data = bytes(data)
    count = _check_opcodes(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load(), count
    except pickle.UnpicklingError:
        raise
    except (ValueError, TypeError, AttributeError, EOFError, IndexError, KeyError, struct.error, OverflowError,
            RecursionError) as error:
        raise pickle.UnpicklingError(f"malformed pickle ({type(error).__name__}: {error})"[:300]) from None


_LEAVES = (int, float, complex, str, bytes, bytearray, type(None))


def _realise(obj, budget=None, memo=None, depth=0):
    """Turn stubs into arrays through dicts, lists and tuples, visiting each shared object once.

    ``memo`` maps ``id(original) → realised`` so a DAG of shared references (pickle's memo) is walked once
    and stays shared; containers nest at most :data:`PICKLE_MAX_DEPTH` deep (cycles end there too); ``budget``
    bounds the array bytes and container items built. Any other type raises ``pickle.UnpicklingError``.
    """
    if isinstance(obj, _LEAVES):
        return obj
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if depth > PICKLE_MAX_DEPTH:
        raise pickle.UnpicklingError(f"containers nested deeper than {PICKLE_MAX_DEPTH} levels; a data batch is a "
                                     f"dict of flat lists and arrays")
    if isinstance(obj, _ArrayStub):
        out = obj.to_array(budget)
    elif isinstance(obj, dict):
        if budget is not None:
            budget.spend_items(len(obj))
        out = {_realise(k, budget, memo, depth + 1): _realise(v, budget, memo, depth + 1) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        if budget is not None:
            budget.spend_items(len(obj))
        items = [_realise(v, budget, memo, depth + 1) for v in obj]
        out = items if isinstance(obj, list) else tuple(items)
    else:
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} in the pickle")
    memo[key] = out
    return out


def safe_unpickle(data: bytes):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (bytes keys kept as bytes), with bounded work.

    The opcodes are checked first (see :func:`_check_opcodes`); containers may nest
    :data:`PICKLE_MAX_DEPTH` deep; shared references are realised once (a pickle of lists that double per
    level costs its size, not 2^levels); arrays may add up to at most the input's size.

    Raises
    ------
    pickle.UnpicklingError
        A global other than NumPy's array pieces (``os.system`` ...), object arrays, a disallowed opcode, deep
        nesting, arrays larger than the input, or malformed data.
    """
    obj, count = _load_restricted(data)
    return _realise(obj, _Budget(len(data), count))


def _read_bounded(path, limit) -> bytes:
    """The bytes of ``path`` (``.gz`` decompressed), refusing more than ``limit`` bytes."""
    if not os.path.isfile(path):
        raise FileFormatError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a file")
    try:
        with _open_maybe_gz(path) as f:
            data = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise FileFormatError(f"{path}: cannot be read: corrupt or truncated ({error})") from None
    if len(data) > limit:
        raise FileFormatError(f"{path}: more than {_human_bytes(limit)} (the cap for one batch file); refused")
    return data


def load_cifar10_batch(path, max_bytes=None) -> Dataset:
    """One CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``): images (N, 32, 32, 3) in [0, 1].

    The file's ``data`` is (N, 3072) uint8 (or N·3072 bytes), each row the 1,024 red, then green, then blue
    values; ``labels`` (or ``fine_labels``) a flat list of N integers. Only those two entries are realised;
    the rest of the dict is not walked.

    Parameters
    ----------
    path : str
    max_bytes : int, optional
        Cap on the file's size after gzip (default :data:`CIFAR_MAX_FILE_BYTES`).

    Raises
    ------
    tinynet.fileio.FileFormatError
        Missing, corrupt, oversized or unsafe pickle (the :func:`safe_unpickle` reason is in the message), not a
        dict with ``data`` and ``labels``, data not uint8 rows of 3072, labels not a flat list of integers ≥ 0,
        or image and label counts that differ.
    """
    path = os.fspath(path)
    raw = _read_bounded(path, CIFAR_MAX_FILE_BYTES if max_bytes is None else int(max_bytes))
    try:
        top, count = _load_restricted(raw)
        if not isinstance(top, dict):
            raise FileFormatError(f"{path}: holds a {type(top).__name__}, not a CIFAR batch (a dict with 'data' "
                                  f"and 'labels')")
        entries = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in top.items()
                   if isinstance(k, (bytes, str))}
        labels = entries.get("labels", entries.get("fine_labels"))
        if "data" not in entries or labels is None:
            raise FileFormatError(f"{path}: not a CIFAR batch: it lacks 'data' or 'labels' (it has "
                                  f"{sorted(entries)[:10]})")
        budget = _Budget(len(raw), count)
        data, labels = _realise(entries["data"], budget), _realise(labels, budget)
    except pickle.UnpicklingError as error:
        raise FileFormatError(f"{path}: not a safe CIFAR batch: {error}") from None
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, np.uint8)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise FileFormatError(f"{path}: 'data' is {type(data).__name__} {getattr(data, 'dtype', '')}, expected "
                              f"uint8 rows of 3072 values")
    if data.ndim == 1 and data.size % 3072 == 0:
        data = data.reshape(-1, 3072)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise FileFormatError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072) (32x32 RGB rows)")
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise FileFormatError(f"{path}: 'labels' is an array of shape {labels.shape} {labels.dtype}, expected "
                                  f"N integers")
    elif not (isinstance(labels, (list, tuple))
              and all(isinstance(v, int) and not isinstance(v, bool) for v in labels)):
        raise FileFormatError(f"{path}: 'labels' must be a flat list of integers")
    if any(isinstance(v, int) and not -2 ** 62 < v < 2 ** 62 for v in labels):
        raise FileFormatError(f"{path}: 'labels' holds values that are not class indices")
    labels = _as_labels(np.asarray(labels, dtype=np.int64), f"{path}: 'labels'", FileFormatError,
                        allow_negative=False)
    if len(labels) != len(data):
        raise FileFormatError(f"{path}: {len(data)} images in 'data' but {len(labels)} 'labels'")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Dataset(scale_pixels(x, path), labels)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(folder, max_bytes=None):
    """CIFAR-10 python batches in ``folder`` (``data_batch_1..5`` and ``test_batch``).

    Returns
    -------
    train, test : Dataset

    Raises
    ------
    FileNotFoundError
        No ``data_batch_*`` or no ``test_batch``.
    tinynet.fileio.FileFormatError
        As :func:`load_cifar10_batch`, or a label outside 0..9 (the file named).
    """
    names = sorted(n for n in os.listdir(folder) if n.startswith("data_batch"))
    if not names or not os.path.exists(os.path.join(folder, "test_batch")):
        raise FileNotFoundError(f"load_cifar10: {folder} needs data_batch_* and test_batch")
    parts = []
    for name in names + ["test_batch"]:
        path = os.path.join(folder, name)
        part = load_cifar10_batch(path, max_bytes)
        if len(part) and part.y.max() >= len(CIFAR10_CLASSES):
            raise FileFormatError(f"{path}: label {int(part.y.max())} is outside CIFAR-10's classes 0..9")
        parts.append(part)
    train = Dataset(np.concatenate([p.x for p in parts[:-1]]), np.concatenate([p.y for p in parts[:-1]]),
                    CIFAR10_CLASSES)
    test = Dataset(parts[-1].x, parts[-1].y, CIFAR10_CLASSES)
    return train, test


# -------------------------------------------------------------------------------------------- dispatch
def load_dataset(source="digits", image_size=None, test_fraction=0.2, seed=0, max_bytes=None):
    """Load ``'digits'`` or a path and return ``(train, test)``.

    A path may be an ``.npz`` file, a folder with MNIST IDX files, a folder with CIFAR-10 batches, or a
    folder of class subfolders. Sources without their own test set are split (stratified, ``seed``; see
    :func:`stratified_split`). ``image_size`` resizes every image (digits default to 32). Check the result
    with :func:`check_for_training` before training.

    Raises
    ------
    FileNotFoundError
        No such path.
    tinynet.fileio.FileFormatError
        As the loader for the path; a file that is not ``.npz``; a split that leaves no test image (every
        class has a single image).
    """
    if isinstance(source, str) and source == "digits":
        return load_digits(image_size or 32, test_fraction, seed)
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"load_dataset: no such file or folder: {source!r} (or use 'digits')")
    if os.path.isfile(source):
        if not source.endswith(".npz"):
            raise FileFormatError(f"{source}: a file must be an .npz with x/y arrays (or give a folder)")
        result = load_npz(source, max_bytes)
    elif _find(source, [MNIST_FILES["train"][0]]):
        result = load_mnist(source, max_bytes)
    elif os.path.exists(os.path.join(source, "test_batch")):
        result = load_cifar10(source, max_bytes)
    else:
        result = load_folder(source, image_size=image_size, max_bytes=max_bytes)
    if isinstance(result, tuple):
        train, test = result
    else:
        train, test = split(result, test_fraction, seed)
        if len(test) == 0 and len(train) and test_fraction > 0:
            raise FileFormatError(f"{source}: no test images can be set aside: each of the {train.num_classes} "
                                  f"classes has a single image (a class needs 2 or more)")
    if image_size is not None:
        train.x, test.x = resize_images(train.x, image_size), resize_images(test.x, image_size)
    return train, test

# -------------------------------------------------------------------------------------------- batches
class Normalizer:
    """Per-channel standardisation ``(x − mean) / std`` with statistics from the training images."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)

    @classmethod
    def fit(cls, x):
        x = np.asarray(x, dtype=np.float32)
        return cls(x.mean(axis=(0, 1, 2)), np.maximum(x.std(axis=(0, 1, 2)), 1e-6))

    def __call__(self, x):
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def get_config(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def random_crop(x, padding, rng) -> np.ndarray:
    """Pad each image by ``padding`` (zeros) and crop back at a random offset, one offset per image.

    The crop is one fancy-index gather for the whole batch (no loop over images).
    """
    if padding <= 0:
        return x
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, size=n)
    dx = rng.integers(0, 2 * padding + 1, size=n)
    rows = (dy[:, None] + np.arange(h))[:, :, None]     # (n, h, 1)
    cols = (dx[:, None] + np.arange(w))[:, None, :]     # (n, 1, w)
    return padded[np.arange(n)[:, None, None], rows, cols]


def random_flip(x, rng) -> np.ndarray:
    """Mirror each image left-right with probability 1/2."""
    flip = rng.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


class Augment:
    """Optional training-time augmentation: random crop (pad then crop) and horizontal flip.

    Parameters
    ----------
    crop : int, default 0
        Padding for the random crop (0: no crop).
    flip : bool, default False
        Random left-right flips (wrong for digits: a mirrored 2 is not a 2).
    """

    def __init__(self, crop=0, flip=False):
        self.crop, self.flip = int(crop), bool(flip)

    def __call__(self, x, rng):
        if self.crop:
            x = random_crop(x, self.crop, rng)
        if self.flip:
            x = random_flip(x, rng)
        return x

    def get_config(self):
        return {"crop": self.crop, "flip": self.flip}


def iterate_batches(x, y, batch_size, shuffle=False, rng=None):
    """Yield ``(x_batch, y_batch)`` of ``batch_size`` (the last one may be smaller).

    With ``shuffle`` the order is a permutation drawn from ``rng`` (a NumPy Generator), one per call.
    """
    n = len(x)
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def num_batches(n, batch_size) -> int:
    return -(-n // batch_size)


__all__ = ["Dataset", "load_digits", "load_folder", "load_npz", "load_idx", "load_mnist", "load_cifar10_batch",
           "load_cifar10", "load_dataset", "read_image", "resize_images", "stratified_split", "split",
           "safe_unpickle", "RestrictedUnpickler", "Normalizer", "Augment", "random_crop", "random_flip",
           "iterate_batches", "num_batches", "scale_pixels", "check_for_training", "FileFormatError",
           "IMAGE_EXTENSIONS", "NPZ_KEYS", "CIFAR10_CLASSES"]
