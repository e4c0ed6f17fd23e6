"""The :class:`Dataset` container, label and class-name checks, and stratified splitting.

Labels become ``int64`` class indices (whole-number floats are cast, one-hot rows converted with argmax);
class names are non-empty, distinct strings kept as given, one for every label. Without class names the
classes are ``0..max(label)``, at most :data:`MAX_CLASSES` of them. :func:`stratified_split` and :func:`split`
set aside the same share of every class, fixed by a seed.
"""
from __future__ import annotations

import reprlib
from dataclasses import dataclass, field

import numpy as np

from .validation import _far_outside

#: The most classes derived from the labels alone (``max(label) + 1`` when no class names are given, in
#: :class:`Dataset` and the loaders). A larger label is a stray value (an 'ignore' label, a pixel count, an id),
#: not a class: it is refused before one name per class is built. Give class names for more classes.
MAX_CLASSES = 1 << 20


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
            raise error(f"{source}: labels must be whole numbers (class indices); label {i} is {y[i].item()!r}")
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
    """``names`` as a list of non-empty, distinct strings (kept exactly as given: no stripping or escaping).

    ``names`` must be a list, a tuple or a 1-D array (a single string is refused with ``TypeError``, not split
    into characters); a bad name raises ``error``.
    """
    if not isinstance(names, (list, tuple, np.ndarray)) or np.ndim(names) != 1:
        raise TypeError(f"{source}: must be a list, tuple or 1-D array of strings, got {type(names).__name__} "
                        f"{reprlib.repr(names)}")
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


def _top_label(label_arrays) -> int:
    """The largest label over all arrays (-1 when they are all empty)."""
    return max((int(y.max()) for y in label_arrays if len(y)), default=-1)


def _check_labels_named(label_arrays, names, source, error=ValueError):
    """Raise ``error`` unless every label in ``label_arrays`` has a name in ``names``."""
    top = _top_label(label_arrays)
    if top >= len(names):
        raise error(f"{source}: {len(names)} class_names but the labels go up to {top} ({top + 1} classes)")


def _default_names(*label_arrays, source="labels", error=ValueError) -> list:
    """``['0', ..., str(K - 1)]`` for the largest label over all arrays (so train and test share one list).

    Raises ``error`` when that would be more than :data:`MAX_CLASSES` classes, naming the largest label and,
    when some labels lie far outside the others, which (the rule :func:`check_for_training` reports).
    """
    top = _top_label(label_arrays)
    if top >= MAX_CLASSES:
        values, counts = np.unique(np.concatenate(label_arrays), return_counts=True)
        raise error(f"{source}: the labels go up to {top}, which would make {top + 1} classes; at most "
                    f"{MAX_CLASSES} are derived from the labels{_far_outside(values, counts)}. Labels are class "
                    f"indices 0..K-1 (give class_names when there really are more classes)")
    return [str(i) for i in range(top + 1)]


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
    class_names : list, tuple or 1-D array of str
        Non-empty, distinct strings, kept as given (a name may hold any character: print it escaped), one for
        every label (more names than labels are fine: a class may have no images here). When left out,
        ``['0', ..., str(max(y))]``: labels with gaps then give classes with no images, which
        :func:`check_for_training` reports; more than :data:`MAX_CLASSES` classes are refused.

    Raises
    ------
    ValueError
        Images not (N, H, W[, C]), or with 0 rows, columns or channels (0 images is fine); image and label counts
        that differ; labels that are not class indices;
        a label with no class name; without class names, a label of :data:`MAX_CLASSES` or more (naming
        the labels far outside the others, as :func:`check_for_training`); a class name that is empty,
        repeated or not a string.
    TypeError
        Images whose dtype is not a real number (strings, objects, complex); ``class_names`` that is not a list,
        tuple or 1-D array (e.g. a single string).
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list = field(default_factory=list)

    def __post_init__(self):
        try:
            self.x = np.asarray(self.x)
        except (ValueError, TypeError) as error:  # e.g. a list of images of different sizes
            raise ValueError(f"Dataset: the images are not one array of numbers ({error}); give an array "
                             f"(N, H, W[, C]), every image of the same shape") from None
        if self.x.dtype.kind not in "biuf":
            raise TypeError(f"Dataset: images of dtype {self.x.dtype} (shape {self.x.shape}); pixels must be real "
                            f"numbers (float, integer or bool)")
        self.y = _as_labels(self.y, "Dataset")
        if self.x.ndim == 3:
            self.x = self.x[..., None]
        if self.x.ndim != 4:
            raise ValueError(f"Dataset: images must be (N, H, W) or (N, H, W, C), got shape {self.x.shape}")
        if 0 in self.x.shape[1:]:
            raise ValueError(f"Dataset: images of shape {self.x.shape} have no pixels (0 rows, columns or "
                             f"channels)")
        if len(self.x) != len(self.y):
            raise ValueError(f"Dataset: {len(self.x)} images (shape {self.x.shape}) but {len(self.y)} labels "
                             f"(shape {self.y.shape})")
        names = self.class_names
        if names is None or (isinstance(names, (list, tuple, np.ndarray)) and len(names) == 0):
            self.class_names = _default_names(self.y, source="Dataset")
        else:
            self.class_names = _check_class_names(names, "Dataset: class_names")
            _check_labels_named([self.y], self.class_names, "Dataset")

    def __len__(self):
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def subset(self, index) -> Dataset:
        return Dataset(self.x[index], self.y[index], list(self.class_names))


# -------------------------------------------------------------------------------------------- splitting
def stratified_split(y, test_fraction=0.2, seed=0):
    """Indices ``(train, test)`` with each class split in the same proportion, fixed by ``seed``.

    A class of ``n`` images puts ``round(n · test_fraction)`` of them in the test set, but at least one when
    ``n ≥ 2`` and ``test_fraction > 0`` (so every class is measured) and never all of them (so every class is
    learnt: no class ends with zero training images). A class with a single image goes to the training set;
    it has no test image (:func:`check_for_training` warns about it).

    Parameters
    ----------
    y : array_like (N,)
        Labels, read as :class:`Dataset` reads them: whole-number floats are cast, (N, 1) and one-hot (N, K)
        rows are accepted.
    test_fraction : float, default 0.2
        In [0, 1) (a boolean is refused).
    seed : int or numpy.random.Generator, default 0

    Raises
    ------
    ValueError
        ``test_fraction`` not a number in [0, 1); labels that are not class indices (NaN, fractions, ...).
    """
    number = isinstance(test_fraction, (int, float, np.integer, np.floating)) \
        and not isinstance(test_fraction, (bool, np.bool_))
    if not (number and 0 <= test_fraction < 1):
        raise ValueError(f"stratified_split: test_fraction must be a number in [0, 1), got {test_fraction!r}")
    y = _as_labels(y, "stratified_split")
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


__all__ = ["Dataset", "MAX_CLASSES", "stratified_split", "split"]
