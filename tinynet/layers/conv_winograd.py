"""3×3 stride-1 convolutions by Winograd's minimal filtering F(4×4, 3×3): a fast path of :class:`Conv2D`.

im2col multiplies every 3×3 window by the kernel: 9 multiply-adds per output value and input channel.
Winograd (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) computes a 4×4 tile of
outputs from the 6×6 input tile ``d`` that covers it, for each input channel c and filter k, as

.. math::

    Y = A^T \\left[ (G g G^T) \\odot (B^T d B) \\right] A

with the constant matrices ``B^T`` (6×6), ``G`` (6×3) and ``A^T`` (4×6) of
:data:`tinynet.kernels.common.WINOGRAD_BT` and its neighbours. The sum over the input channels moves inside
the brackets, so with ``V[ξν] = (B^T d B)[ξ, ν]`` for every tile (rows) and channel (columns), and
``U[ξν] = (G g G^T)[ξ, ν]`` for every channel (rows) and filter (columns), the convolution is 36 matrix
products, one per position ``(ξ, ν)`` of the 6×6 tile,

.. math::

    M[ξν] = V[ξν] \\, U[ξν] \\quad (T \\times C)(C \\times K), \\quad T = N \\lceil H_o/4 \\rceil \\lceil W_o/4 \\rceil,

followed by ``Y = A^T M A`` per tile: 36 multiply-adds per 16 outputs instead of 144, 2.25 times fewer. The
transforms are additions and multiplications by small constants, done by the kernels
:func:`~tinynet.kernels.winograd_input`, :func:`~tinynet.kernels.winograd_output` and
:func:`~tinynet.kernels.winograd_gradient`.

Backward, with ``G_z = ∂L/∂z`` (after the activation's derivative):

* the kernel's gradient is Winograd's too, with the same tiles: ``∂M = A G_z A^T`` per tile
  (:func:`~tinynet.kernels.winograd_gradient`, the adjoint of the output transform), ``∂U[ξν] = V[ξν]^T ∂M[ξν]``
  (36 products summed over the tiles), and ``∂g = G^T ∂U G`` (:func:`kernel_gradient`);
* the input's gradient of a stride-1 convolution is a stride-1 convolution of ``G_z`` with the kernel turned
  by 180° and its channel axes swapped, ``g'[a, b, k, c] = g[2 − a, 2 − b, c, k]``, padded by ``2 − pad`` on
  each side (:func:`input_gradient`): the forward path once more.

So all three products of a training step shrink 2.25 times. What it costs: the transforms (a few passes
over arrays of the input's and output's size) and precision. The 6×6 transforms multiply by up to 5 and
divide by up to 24, and they mix the 36 cells of a tile into all 16 of its outputs, so an output's rounding
error follows the largest value of its *tile*, not its own size:

.. math::

    |z_{Winograd} − z| \\lesssim ε \\, \\max_{tile} |d| \\, \\sum_{a,b,c} |g[a, b, c, k]|

(ε the dtype's machine epsilon; measured constant 0.3–0.45 in float32), where im2col's error is about
``ε · Σ |d · g|`` over the output's own window. Every output of a tile is as accurate as the tile's largest
value allows: on ordinary data (values of one scale) float32 results differ from im2col's by about 1e-5 of
the output's scale, but a small output in the tile of a value 10⁵ times larger is off by 1–3 %, where im2col is
exact to 1e-7. So a forward input whose largest ``|value|`` exceeds :data:`DYNAMIC_RANGE` (10³) times a typical
one goes through im2col (:func:`range_fits`; GoogLeNet's activations stay under 10); below that the bound
above is at most about ``10³ · ε`` (about 1e-3 in float32) of a typical output. Backward's products have no
such guard: the input's gradient of a tile follows the tile's largest ``∂L/∂z`` the same way, the kernel's
gradient the largest products of ``x`` and ``∂L/∂z``. In float64 the same bound holds with ε = 2.2e-16, and
results equal im2col's to about 1e-12. ``tinynet.set_winograd(False)`` (or ``with tinynet.winograd(False):``,
or ``TINYNET_WINOGRAD=0``) turns the path off, so every convolution's error is im2col's
(:func:`tinynet.set_fast_paths` turns off every fast path); ``tests/test_winograd.py`` checks it against
im2col and against a loop convolution.

It runs for a 3×3 kernel with strides 1 on the CPU when the products are big enough to gain (:func:`applies`):
at least 128 tiles (rows of each product) and T·C·K ≥ 2²¹. Measured on this project's 2-core machine, forward
and backward of one layer, Winograd against im2col: 0.52–0.78× at 56×56 and 28×28 (GoogLeNet's conv2, 3a,
3b at batch 8), 0.75–0.97× at 14×14 (4a–4e), but 1.4–1.7× at 7×7 (5a, 5b: 32 tiles, and a 7×7 output
fills 49 of the 64 cells of its tiles) and 1.1–1.9× for the small GoogLeNet's layers (16 to 48 channels).
An input (forward) or an upstream gradient (backward) holding a NaN or an infinity, or so large, with the
kernel or the input it meets, that a transform could overflow, goes through im2col instead
(:func:`products_fit`), so non-finite values come out exactly where the plain path puts them and finite ones
stay finite; so does a forward input of an extreme dynamic range (:func:`range_fits`, see above).
"""
from __future__ import annotations

import numpy as np

from .. import backend, kernels
from ..blas import batched_matmul, small_matmul
from ..kernels.common import WINOGRAD_G, winograd_tiles

#: the fewest tiles T (rows of each of the 36 products), and the least T·C·K, that take the Winograd path
MIN_TILES, MIN_WORK = 128, 2 ** 21
#: the largest tiles or products array (bytes) one pass allocates: a larger batch runs in chunks of images
#: (:func:`images_per_chunk`)
CHUNK_BYTES = 16 * 2 ** 20


def tiles(batch, out_hw):
    """T, the number of 4×4 output tiles of a batch: ``N · ceil(Ho / 4) · ceil(Wo / 4)``."""
    th, tw = winograd_tiles(*out_hw)
    return batch * th * tw


def applies(layer, x, out_hw, pads) -> bool:
    """Whether ``layer`` (a Conv2D) convolves ``x`` by Winograd: a 3×3 kernel, strides 1, pads of at most 2 (any
    of Keras' paddings), a CPU array, at least :data:`MIN_TILES` tiles and ``T·C·K ≥`` :data:`MIN_WORK`, with
    fast paths and Winograd on (:func:`tinynet.set_fast_paths`, :func:`tinynet.set_winograd`)."""
    if not (layer.kernel_size == (3, 3) and layer.strides == (1, 1) and max(pads) <= 2
            and backend.fast_paths_enabled() and backend.winograd_enabled() and not backend.is_gpu_array(x)):
        return False
    t = tiles(x.shape[0], out_hw)
    return t >= MIN_TILES and t * x.shape[-1] * layer.filters >= MIN_WORK


def _g_kron_g(dtype):
    """``G ⊗ G`` (36×9) in ``dtype``: ``(G g G^T)[ξ, ν] = Σ_{a,b} G[ξ, a] G[ν, b] g[a, b]`` is row ``6 ξ + ν`` of
    ``(G ⊗ G) vec(g)``, so the transform of every (channel, filter) pair is one product."""
    return np.kron(WINOGRAD_G, WINOGRAD_G).astype(dtype)


def kernel_transform(kernel):
    """``U = G g G^T`` for every (input channel, filter) pair.

    Parameters
    ----------
    kernel : ndarray, shape (3, 3, C, K)

    Returns
    -------
    u : ndarray, shape (36, C, K): ``u[6 ξ + ν] = Σ_{a,b} G[ξ, a] g[a, b] G[ν, b]``
    """
    c, k = kernel.shape[2], kernel.shape[3]
    return small_matmul(_g_kron_g(kernel.dtype), kernel.reshape(9, c * k)).reshape(36, c, k)


def kernel_gradient(gu):
    """``∂g = G^T ∂U G``, the adjoint of :func:`kernel_transform`.

    Parameters
    ----------
    gu : ndarray, shape (36, C, K)

    Returns
    -------
    gkernel : ndarray, shape (3, 3, C, K)
    """
    c, k = gu.shape[1], gu.shape[2]
    return small_matmul(_g_kron_g(gu.dtype).T, gu.reshape(36, c * k)).reshape(3, 3, c, k)


def norm(a) -> float:
    """``‖a‖`` (Frobenius) of the C-contiguous array ``a`` by one BLAS dot product: ``inf`` when the sum of
    squares overflows (every ``|a| < 1.8e19`` in float32 keeps it finite), ``nan`` when ``a`` holds a NaN."""
    flat = a.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is the answer, not a problem
        return float(np.sqrt(np.dot(flat, flat)))


def moderate(a) -> bool:
    """Whether the C-contiguous array ``a`` holds only finite values whose sum of squares is finite too."""
    return bool(np.isfinite(norm(a)))


#: a bound on how far the transforms and the 36 products can carry a value beyond ``‖a‖ ‖b‖`` (any entry of
#: a product of tiles V (B^T d B, up to 100 × the input's largest value, each cell in up to 4 tiles) and U
#: (G g G^T, at most the kernel's largest), then A^T M A (up to 361 ×): about 10^5, taken with a margin)
GROWTH = 1e6


def products_fit(norm_a, norm_b, dtype) -> bool:
    """Whether a Winograd convolution of an array of norm ``norm_a`` by one of norm ``norm_b`` (input and kernel,
    or a gradient and either) stays finite in ``dtype``: ``norm_a · norm_b · GROWTH`` below its largest value.

    The path runs only then. A transform mixes the 36 cells of a tile, so a NaN or an infinity would spread to
    all 16 outputs of every tile that reads it (im2col: only to the outputs whose window holds it), and values
    near the dtype's largest could overflow in the transforms where im2col stays finite. Anything else runs
    through im2col, which gives the plain path's values exactly (non-finite ones included); a bound that
    overflows on finite values only sends a call to im2col.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(norm_a * norm_b * GROWTH < np.finfo(dtype).max)  # False for nan and inf


#: an input (forward) or upstream gradient (backward) whose largest ``|value|`` exceeds this many times its
#: typical one (:func:`typical`) goes through im2col (:func:`range_fits`)
DYNAMIC_RANGE = 1e3
#: how many evenly spaced elements :func:`typical` reads at most
TYPICAL_SAMPLE = 4096


def typical(a) -> float:
    """A typical ``|value|`` of the array ``a``: the 95th percentile of ``|a|`` over at most
    :data:`TYPICAL_SAMPLE` evenly spaced elements (a stride that shares no factor with the channel count, so
    every channel is read). A few outliers (under 5 % of the sample) do not move it."""
    flat = a.reshape(-1)
    step = max(1, flat.size // TYPICAL_SAMPLE)
    channels = a.shape[-1] if a.ndim else 1
    while step > 1 and np.gcd(step, channels) != 1:
        step += 1
    sample = np.abs(flat[::step][:TYPICAL_SAMPLE])
    if sample.size == 0:
        return 0.0
    k = int(0.95 * (sample.size - 1))
    return float(np.partition(sample, k)[k])


def range_fits(a) -> bool:
    """Whether the Winograd path keeps float32 errors near every output's own scale for the array ``a`` (an
    input, or an upstream gradient): ``max |a| ≤`` :data:`DYNAMIC_RANGE` ``·`` :func:`typical` ``(a)``.

    A transform mixes the 36 cells of a tile, so each of the tile's 16 outputs carries a rounding error of about
    ``ε · max_tile |d| · ‖g‖`` (``ε`` the dtype's machine epsilon, ``d`` the tile's inputs, ``g`` the kernel,
    times the transforms' growth, a few units), whatever its own window holds: a value 10⁵ times its
    neighbours leaves errors of 1-3 % (float32) on small outputs of its tile that do not read it, where im2col
    is exact to 1e-7. Bounding the largest value by 10³ typical ones bounds every output's error by about
    ``10³ · ε`` (1e-4 in float32) of the typical output. Costs one pass over ``a`` (its largest magnitude,
    :func:`tinynet.kernels.largest_magnitudes`) and a partial sort of the sample; GoogLeNet's activations (random
    normal or trained) stay well inside (their largest value is a few times the 95th percentile). Always true
    for an array of zeros."""
    if a.size == 0:
        return True
    top = kernels.largest_magnitudes([a])[0]  # nan for NaN or inf
    return bool(top <= DYNAMIC_RANGE * typical(a))  # False for nan


def images_per_chunk(x_shape, out_shape, itemsize) -> int:
    """How many images one pass of the transforms and products takes: all of them when the largest array of
    the pass, the tiles ``V`` (36, T, C) or the products ``M`` (36, T, K), is at most :data:`CHUNK_BYTES`;
    else as many as keep it under that (at least one).

    A pass over the whole batch would allocate ``M`` whole: 43 MB for GoogLeNet's conv2 at batch 8 (36 × 1568
    tiles × 192 filters), and backward two such arrays. glibc's allocator serves an array over 32 MiB by a
    fresh ``mmap`` outside its heap, so these arrays added to the peak resident memory of a train step even
    where the heap had that much free (its peak came at conv2's backward, the end of the step); chunks of at
    most 16 MiB come from the heap's free space."""
    n, c, k = out_shape[0], x_shape[-1], out_shape[-1]
    per_image = 36 * tiles(1, out_shape[1:3]) * max(c, k) * itemsize
    if n * per_image <= CHUNK_BYTES:
        return max(n, 1)
    return max(1, CHUNK_BYTES // per_image)


def convolve(x, kernel, pads, out_shape):
    """The forward pass: ``z`` (N, Ho, Wo, K) of a 3×3 stride-1 convolution of ``x`` (N, H, W, C) padded by
    ``pads``, and the input tiles ``V`` (36, T, C) the kernel's gradient needs (``None`` where the batch ran in
    chunks of images, :func:`images_per_chunk`: backward then transforms ``x`` again, chunk by chunk)."""
    u = kernel_transform(kernel)
    step = images_per_chunk(x.shape, out_shape, x.itemsize)
    if step >= x.shape[0]:
        v = kernels.winograd_input(x, pads)
        return kernels.winograd_output(batched_matmul(v, u), out_shape), v
    z = np.empty(out_shape, dtype=np.result_type(x.dtype, u.dtype))
    for start in range(0, x.shape[0], step):
        part = x[start:start + step]
        v = kernels.winograd_input(part, pads)
        z[start:start + step] = kernels.winograd_output(batched_matmul(v, u), (part.shape[0],) + out_shape[1:])
    return z, None


def kernel_gradient_of(gz, v, x=None, pads=None):
    """``∂L/∂g`` (3, 3, C, K) from ``gz = ∂L/∂z`` (N, Ho, Wo, K) and the forward's input tiles ``V``; with
    ``v=None``, from the input ``x`` and its ``pads``, transformed again in chunks of images
    (:func:`images_per_chunk`), the chunks' ``∂U`` summed."""
    if v is not None:
        return kernel_gradient(batched_matmul(v.transpose(0, 2, 1), kernels.winograd_gradient(gz)))
    step = images_per_chunk(x.shape, gz.shape, gz.itemsize)
    gu = None
    for start in range(0, x.shape[0], step):
        v = kernels.winograd_input(x[start:start + step], pads)
        part = batched_matmul(v.transpose(0, 2, 1), kernels.winograd_gradient(gz[start:start + step]))
        if gu is None:
            gu = part
        else:
            gu += part
    return kernel_gradient(gu)


def input_gradient(gz, kernel, pads, x_shape):
    """``∂L/∂x`` (``x_shape``) from ``gz = ∂L/∂z``: the convolution of ``gz`` with the kernel turned by 180°
    and its channel axes swapped, padded by ``2 − pad`` on each side."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
    back_pads = tuple(2 - p for p in pads)
    gx, _ = convolve(gz, flipped, back_pads, x_shape)
    return gx
