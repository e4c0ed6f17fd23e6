"""Checks a ``(train, test)`` pair before training (:func:`check_for_training`).

Errors for what cannot train (no images, bad or missing labels, a single class, a class with no training
image, NaN pixels, mismatched shapes or class names); warnings, one sentence each, for what trains badly.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_number


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


def _far_outside(values, counts) -> str:
    """The labels that lie far outside the others, as a clause for an error message, or ``''``.

    The labels present (``values``, sorted and distinct, with ``counts`` images each) are cut at their widest
    gap; when the gap skips a label and the group above it has fewer images than the group below, that group
    is named as likely stray or 'ignore' labels (e.g. one 255 among 0..9).

    Parameters
    ----------
    values : int ndarray (K,)
        The distinct labels, ascending.
    counts : int ndarray (K,)
        How many images have each label.

    Returns
    -------
    str
        ``'; label 255 (1 image) lies far outside the others (0..9): a stray or 'ignore' label? Remove or
        relabel those images'``, or ``''``.
    """
    gaps = np.diff(values)
    if gaps.size == 0 or gaps.max() <= 1:
        return ""
    cut = int(np.argmax(gaps)) + 1
    low, high = values[:cut], values[cut:]
    if counts[cut:].sum() >= counts[:cut].sum():
        return ""
    far = ", ".join(f"label {int(v)} ({_plural(int(c), 'image')})" for v, c in zip(high[:3], counts[cut:cut + 3]))
    return (f"; {far}" + (", ..." if high.size > 3 else "")
            + f" lie{'s' if high.size == 1 else ''} far outside the others ({_runs(low)}): a stray or 'ignore' "
              f"label? Remove or relabel those images")


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


def _unseen(ty, counts, k) -> str:
    """``'label(s) 200 (1 image)'``: the test labels that no training image has, or ``''``."""
    unseen = ty[(ty >= k) | (counts[np.minimum(ty, k - 1)] == 0)]
    if not unseen.size:
        return ""
    values, n = np.unique(unseen, return_counts=True)
    shown = ", ".join(f"{int(v)} ({_plural(int(c), 'image')})" for v, c in zip(values[:5], n[:5]))
    return f"label(s) {shown}{', ...' if values.size > 5 else ''}"


def check_for_training(train, test=None, batch_size=None, parts=("train", "test")) -> list:
    """Check a ``(train, test)`` pair before training: raise for what cannot train, return warnings for the rest.

    Parameters
    ----------
    train : Dataset
    test : Dataset, optional
        Checked against ``train`` when given.
    batch_size : int, optional
        An integer ≥ 1, checked against the number of training images when given.
    parts : (str, str), default ('train', 'test')
        How the messages name the two sets, e.g. with the files they were read from
        (``'test (t10k-labels-idx1-ubyte)'``).

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
        training image has (also when they are what makes classes above the training labels, which then have
        no training image: the message names the test set, which holds the stray label); images of another
        shape in ``test``; NaN or infinite pixels; class names that differ between ``train`` and ``test`` (over the
        classes both name: one set may lack the last classes); a ``batch_size`` that is not an integer ≥ 1.
    """
    tr, te = parts
    warnings = []
    if batch_size is not None:
        batch_size = check_number("check_for_training", "batch_size", batch_size, low=1, integer=True)
    if len(train) == 0:
        raise ValueError(f"{tr}: no training images")
    y = _check_labels(train, tr)
    names = list(train.class_names)
    k = len(names)
    if y.max() >= k:
        bad = np.unique(y[y >= k])
        raise ValueError(f"{tr}: label(s) {_runs(bad)} have no class name (there are {k} class names)")
    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero(counts)
    if present.size < 2:
        c = int(present[0])
        raise ValueError(f"{tr}: all {len(y)} images have label {c}" + (f" ({names[c]!r})" if names[c] != str(c)
                                                                           else "")
                         + "; a classifier needs at least 2 classes")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        if test is not None and len(test) and empty.min() > y.max():
            # the training labels run 0..max with none missing: the classes above them come from the test labels
            # (class names derived from both sets), and the stray label is in the test set, not in train
            stray = _unseen(_check_labels(test, te), counts, k)
            if stray:
                raise ValueError(f"{te}: {stray} that no training image has (the training labels run "
                                 f"0..{int(y.max())})")
        message = (f"{tr}: {empty.size} of the {k} classes have no training images ({_describe(empty, names)})")
        raise ValueError(message + _far_outside(present, counts[present])
                         + ". Labels must run 0..K-1 with every class present")
    bad = _nonfinite_count(train.x)
    if bad:
        raise ValueError(f"{tr}: {_plural(bad, 'pixel value')} {'is' if bad == 1 else 'are'} NaN or infinite")
    single = np.flatnonzero(counts == 1)
    if single.size:
        warnings.append(f"{tr}: {_describe(single, names)} {'have' if single.size > 1 else 'has'} a single "
                        f"training image")
    if batch_size is not None and batch_size > len(y):
        warnings.append(f"batch size {batch_size} is larger than the {len(y)} training images: each epoch is a "
                        f"single step")
    if test is None:
        return warnings
    if len(test) == 0:
        raise ValueError(f"{te}: no test images (nothing to measure the model on); a class needs 2 or more images "
                         "for one to be set aside")
    if tuple(test.x.shape[1:]) != tuple(train.x.shape[1:]):
        raise ValueError(f"{te}: images of {tuple(test.x.shape[1:])} but the training images are "
                         f"{tuple(train.x.shape[1:])}")
    ty = _check_labels(test, te)
    shared = min(len(test.class_names), k)  # a set may lack the last classes (names derived from its labels)
    if list(test.class_names)[:shared] != names[:shared]:
        raise ValueError(f"{te}: the class names differ from the training set's (the same label would mean "
                         "different classes)")
    stray = _unseen(ty, counts, k)
    if stray:
        raise ValueError(f"{te}: {stray} that no training image has")
    bad = _nonfinite_count(test.x)
    if bad:
        raise ValueError(f"{te}: {_plural(bad, 'pixel value')} {'is' if bad == 1 else 'are'} NaN or infinite")
    untested = np.flatnonzero(np.bincount(ty, minlength=k) == 0)
    if untested.size:
        warnings.append(f"{te}: {_describe(untested, names)} {'have' if untested.size > 1 else 'has'} no test "
                        f"images; {'their' if untested.size > 1 else 'its'} accuracy is not measured")
    return warnings


__all__ = ["check_for_training"]
