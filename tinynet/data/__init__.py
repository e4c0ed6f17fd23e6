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
folders starting with ``.``, are not images; anything else named like an image, a folder, a FIFO, a device
or a dangling link included, is an error). Files are opened with :func:`tinynet.fileio.open_regular`, so a
FIFO or a device is refused before a byte is read, never waited on or read without end. Every reader bounds
its work before it allocates: ``max_bytes`` (default :func:`tinynet.fileio.memory_bound`, half the machine's
memory) caps the memory a load holds at its peak (the raw arrays and the float32 images made from them, the
whole set with its train/test copies while it is split, the images before and after resizing); IDX and
``.npz`` headers are checked against it and against the file's size before any data is read or
decompressed (a ``.gz`` is inflated only up to its declared size plus one byte).
A CIFAR file is capped at :data:`CIFAR_MAX_FILE_BYTES`; its pickle's opcodes and memo indices are checked
before it is unpickled, and realising it visits each shared object once, nests at most
:data:`PICKLE_MAX_DEPTH` deep and builds no more array bytes than the file holds.

Modules
-------
=========================  ==========================================================================
module                     holds
=========================  ==========================================================================
:mod:`.dataset`            :class:`Dataset`, label and class-name checks (:data:`MAX_CLASSES`),
                           :func:`stratified_split`, :func:`split`
:mod:`.pixels`             :func:`scale_pixels` (the rule above), :func:`resize_images`
:mod:`.images`             :func:`read_image`, :func:`load_folder` (Pillow)
:mod:`.loaders`            :func:`load_digits`, :func:`load_npz`, :func:`load_idx`, :func:`load_mnist`,
                           :func:`load_dataset`
:mod:`.cifar`              :class:`RestrictedUnpickler`, :func:`safe_unpickle`, :func:`load_cifar10_batch`,
                           :func:`load_cifar10`
:mod:`.validation`         :func:`check_for_training`
:mod:`.batching`           :class:`Normalizer` (:data:`CONSTANT_STD_FRACTION`), :class:`Augment`,
                           :func:`random_crop`, :func:`random_flip`, :func:`iterate_batches`, :func:`num_batches`
=========================  ==========================================================================

Every public name is importable from ``tinynet.data`` itself.
"""
from __future__ import annotations

from ..fileio import FileFormatError
from .batching import CONSTANT_STD_FRACTION as CONSTANT_STD_FRACTION
from .batching import Augment, Normalizer, iterate_batches, num_batches, random_crop, random_flip
from .cifar import CIFAR_MAX_FILE_BYTES as CIFAR_MAX_FILE_BYTES  # public constants, re-exported
from .cifar import PICKLE_MAX_DEPTH as PICKLE_MAX_DEPTH
from .cifar import CIFAR10_CLASSES, RestrictedUnpickler, load_cifar10, load_cifar10_batch, safe_unpickle
from .dataset import MAX_CLASSES as MAX_CLASSES
from .dataset import Dataset, split, stratified_split
from .images import IMAGE_EXTENSIONS, load_folder, read_image
from .loaders import MNIST_FILES as MNIST_FILES
from .loaders import NPZ_KEYS, load_dataset, load_digits, load_idx, load_mnist, load_npz
from .pixels import resize_images, scale_pixels
from .validation import check_for_training

__all__ = ["Dataset", "load_digits", "load_folder", "load_npz", "load_idx", "load_mnist", "load_cifar10_batch",
           "load_cifar10", "load_dataset", "read_image", "resize_images", "stratified_split", "split",
           "safe_unpickle", "RestrictedUnpickler", "Normalizer", "Augment", "random_crop", "random_flip",
           "iterate_batches", "num_batches", "scale_pixels", "check_for_training", "FileFormatError",
           "IMAGE_EXTENSIONS", "NPZ_KEYS", "CIFAR10_CLASSES"]
