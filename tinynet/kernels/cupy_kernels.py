"""The hot kernels on the GPU with CuPy: same functions, signatures and results as :mod:`numpy_kernels`.

Imported only when a CuPy array reaches :mod:`tinynet.kernels` (``import tinynet`` never imports CuPy).

Each kernel is CUDA C compiled once per dtype (float32 → ``float``, float64 → ``double``) with
:class:`cupy.RawModule` and kept in a module-level cache, so later calls only launch. Design:

* **one thread per output element**, in a grid-stride loop, so any size runs with a bounded grid;
* **64-bit index arithmetic** (``long long``) everywhere, so tensors past 2³¹ elements work;
* **backward kernels are gathers**: one thread per *input* element loops over the windows covering it and
  sums their contributions in the same (a, b) order as the NumPy reference. No atomics, so the results are
  deterministic, bit-for-bit, from run to run.

Index maps (NHWC, ``pads = (top, bottom, left, right)``), for a window offset (a, b) of output cell (i, j):
``y = i*sh + a - top``, ``x = j*sw + b - left``. Conversely the windows covering input cell (y, x) are the
(a, i) with ``y + top - a = i*sh``, ``0 <= i < Ho`` (and likewise b, j along the width).
"""
from __future__ import annotations

import cupy as cp
import numpy as np

from . import numpy_kernels
from .common import lrn_safe_scales, lrn_terms, window_output_hw

_BLOCK = 256
_MAX_GRID = 65535 * 32  # enough blocks to fill any GPU; the grid-stride loop covers the rest

_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# Shared by every kernel: a grid-stride loop over `total` elements with a 64-bit index.
_PRELUDE = r"""
typedef long long i64;
#define GRID_STRIDE_LOOP(idx, total) \
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); idx += (i64)blockDim.x * gridDim.x)

// CuPy compiles with -ftz=true: float32 arithmetic, and the compiler's own conversions between float and double,
// flush subnormals (|v| < 1.18e-38) to zero. The float64 paths of the kernels convert with these instead (PTX cvt
// without .ftz), so a float32 result computed there is right wherever it is representable, subnormals included.
// (Compiled for the CPU, as the tests do, they are plain conversions.)
__device__ __forceinline__ double widen(const float v)
{
#ifdef __CUDA_ARCH__
    double r;
    asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(v));
    return r;
#else
    return (double)v;
#endif
}
__device__ __forceinline__ double widen(const double v) { return v; }
__device__ __forceinline__ float narrow(const double v, const float)
{
#ifdef __CUDA_ARCH__
    float r;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(v));
    return r;
#else
    return (float)v;
#endif
}
__device__ __forceinline__ double narrow(const double v, const double) { return v; }
#define TO_T(v) narrow((v), (T)0)

// c ? a : b, bits as they are. The compiler turns a compare-and-select of floats such as "v <= 0 ? 0 : v" into
// the GPU's max.NaN, whose NaN is its own canonical one (a NaN's sign lost); an asm select it leaves alone.
__device__ __forceinline__ float select_bits(const bool c, const float a, const float b)
{
#ifdef __CUDA_ARCH__
    float r;
    asm("{\n\t.reg .pred p;\n\tsetp.ne.s32 p, %3, 0;\n\tselp.f32 %0, %1, %2, p;\n\t}"
        : "=f"(r) : "f"(a), "f"(b), "r"((int)c));
    return r;
#else
    return c ? a : b;
#endif
}
__device__ __forceinline__ double select_bits(const bool c, const double a, const double b)
{
#ifdef __CUDA_ARCH__
    double r;
    asm("{\n\t.reg .pred p;\n\tsetp.ne.s32 p, %3, 0;\n\tselp.f64 %0, %1, %2, p;\n\t}"
        : "=d"(r) : "d"(a), "d"(b), "r"((int)c));
    return r;
#else
    return c ? a : b;
#endif
}

// Each operation rounded to T on its own, never fused into a multiply-add, as CuPy's separate element-wise
// operations give it: the optimizers' fused updates keep the bits of their plain array code. (The _rn
// intrinsics are never contracted; compiled for the CPU, as the tests do, plain operators, which g++ does not
// contract on x86-64 without -mfma.)
#ifdef __CUDA_ARCH__
#define RN_OP(name, op, f32, f64) \
    __device__ __forceinline__ float name(const float a, const float b) { return f32(a, b); } \
    __device__ __forceinline__ double name(const double a, const double b) { return f64(a, b); }
#else
#define RN_OP(name, op, f32, f64) \
    __device__ __forceinline__ float name(const float a, const float b) { return a op b; } \
    __device__ __forceinline__ double name(const double a, const double b) { return a op b; }
#endif
RN_OP(add_rn, +, __fadd_rn, __dadd_rn)
RN_OP(sub_rn, -, __fsub_rn, __dsub_rn)
RN_OP(mul_rn, *, __fmul_rn, __dmul_rn)
RN_OP(div_rn, /, __fdiv_rn, __ddiv_rn)
__device__ __forceinline__ float sqrt_rn(const float a)
{
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(a);
#else
    return sqrtf(a);
#endif
}
__device__ __forceinline__ double sqrt_rn(const double a)
{
#ifdef __CUDA_ARCH__
    return __dsqrt_rn(a);
#else
    return sqrt(a);
#endif
}
"""

_SOURCE = r"""
// cols[n, i, j, a, b, c] = xpad[n, i*sh + a, j*sw + b, c]   (one thread per element of cols)
extern "C" __global__ void im2col(const T* x, T* cols, const i64 total,
                                  const i64 H, const i64 W, const i64 C, const i64 Ho, const i64 Wo,
                                  const i64 kh, const i64 kw, const i64 sh, const i64 sw,
                                  const i64 top, const i64 left, const T pad_value)
{
    GRID_STRIDE_LOOP(idx, total) {
        i64 r = idx;
        const i64 c = r % C;  r /= C;
        const i64 b = r % kw; r /= kw;
        const i64 a = r % kh; r /= kh;
        const i64 j = r % Wo; r /= Wo;
        const i64 i = r % Ho;
        const i64 n = r / Ho;
        const i64 y = i * sh + a - top;
        const i64 x_ = j * sw + b - left;
        cols[idx] = (y >= 0 && y < H && x_ >= 0 && x_ < W) ? x[((n * H + y) * W + x_) * C + c] : pad_value;
    }
}

// dx[n, y, x, c] = sum over windows (i, a), (j, b) covering (y, x) of cols[n, i, j, a, b, c]
// (one thread per input element: a gather, no atomics)
extern "C" __global__ void col2im(const T* cols, T* dx, const i64 total,
                                  const i64 H, const i64 W, const i64 C, const i64 Ho, const i64 Wo,
                                  const i64 kh, const i64 kw, const i64 sh, const i64 sw,
                                  const i64 top, const i64 left)
{
    GRID_STRIDE_LOOP(idx, total) {
        i64 r = idx;
        const i64 c = r % C;  r /= C;
        const i64 x_ = r % W; r /= W;
        const i64 y = r % H;
        const i64 n = r / H;
        T sum = 0;
        for (i64 a = 0; a < kh; ++a) {
            const i64 t = y + top - a;
            if (t < 0 || t % sh != 0 || t / sh >= Ho) continue;
            const i64 i = t / sh;
            for (i64 b = 0; b < kw; ++b) {
                const i64 u = x_ + left - b;
                if (u < 0 || u % sw != 0 || u / sw >= Wo) continue;
                const i64 j = u / sw;
                sum += cols[((((n * Ho + i) * Wo + j) * kh + a) * kw + b) * C + c];
            }
        }
        dx[idx] = sum;
    }
}

// y = max over the real cells of the window (padding is -inf and never wins); argmax = a*pw + b of the
// first maximum in row-major window order; a NaN wins over any number and the first NaN stays, so NaN
// propagates as in PyTorch and Keras (one thread per output element). The argmax starts at the window's
// first real cell (a0, b0), so a window whose real cells are all -inf names that cell, never padding
extern "C" __global__ void maxpool_forward(const T* x, T* y, int* argmax, const i64 total,
                                           const i64 H, const i64 W, const i64 C, const i64 Ho, const i64 Wo,
                                           const i64 ph, const i64 pw, const i64 sh, const i64 sw,
                                           const i64 top, const i64 left, const T neg_inf)
{
    GRID_STRIDE_LOOP(idx, total) {
        i64 r = idx;
        const i64 c = r % C;  r /= C;
        const i64 j = r % Wo; r /= Wo;
        const i64 i = r % Ho;
        const i64 n = r / Ho;
        T best = neg_inf;
        int best_k = (int)((i * sh < top ? top - i * sh : 0) * pw + (j * sw < left ? left - j * sw : 0));
        for (i64 a = 0; a < ph; ++a) {
            const i64 yy = i * sh + a - top;
            if (yy < 0 || yy >= H) continue;
            for (i64 b = 0; b < pw; ++b) {
                const i64 xx = j * sw + b - left;
                if (xx < 0 || xx >= W) continue;
                const T v = x[((n * H + yy) * W + xx) * C + c];
                if (v > best || (v != v && best == best)) {  // strict: ties keep the first maximum
                    best = v;
                    best_k = (int)(a * pw + b);
                }
            }
        }
        y[idx] = best;
        argmax[idx] = best_k;
    }
}

// gx[n, y, x, c] = sum of gy over the windows covering (y, x) whose argmax is this cell (a gather)
extern "C" __global__ void maxpool_backward(const T* gy, const int* argmax, T* gx, const i64 total,
                                            const i64 H, const i64 W, const i64 C, const i64 Ho, const i64 Wo,
                                            const i64 ph, const i64 pw, const i64 sh, const i64 sw,
                                            const i64 top, const i64 left)
{
    GRID_STRIDE_LOOP(idx, total) {
        i64 r = idx;
        const i64 c = r % C;  r /= C;
        const i64 x_ = r % W; r /= W;
        const i64 y = r % H;
        const i64 n = r / H;
        T sum = 0;
        for (i64 a = 0; a < ph; ++a) {
            const i64 t = y + top - a;
            if (t < 0 || t % sh != 0 || t / sh >= Ho) continue;
            const i64 i = t / sh;
            for (i64 b = 0; b < pw; ++b) {
                const i64 u = x_ + left - b;
                if (u < 0 || u % sw != 0 || u / sw >= Wo) continue;
                const i64 j = u / sw;
                const i64 o = ((n * Ho + i) * Wo + j) * C + c;
                if (argmax[o] == (int)(a * pw + b)) sum += gy[o];
            }
        }
        gx[idx] = sum;
    }
}

// number of real (unpadded) cells in window (i, j)
__device__ __forceinline__ i64 window_count(i64 i, i64 j, i64 H, i64 W, i64 ph, i64 pw, i64 sh, i64 sw,
                                            i64 top, i64 left)
{
    const i64 y0 = i * sh - top, x0 = j * sw - left;
    const i64 rows = (y0 + ph < H ? y0 + ph : H) - (y0 > 0 ? y0 : 0);
    const i64 cols = (x0 + pw < W ? x0 + pw : W) - (x0 > 0 ? x0 : 0);
    return rows * cols;
}

// y = (sum of the real cells of the window) / (their count)   (Keras 'same' semantics)
extern "C" __global__ void avgpool_forward(const T* x, T* y, const i64 total,
                                           const i64 H, const i64 W, const i64 C, const i64 Ho, const i64 Wo,
                                           const i64 ph, const i64 pw, const i64 sh, const i64 sw,
                                           const i64 top, const i64 left)
{
    GRID_STRIDE_LOOP(idx, total) {
        i64 r = idx;
        const i64 c = r % C;  r /= C;
        const i64 j = r % Wo; r /= Wo;
        const i64 i = r % Ho;
        const i64 n = r / Ho;
        T sum = 0;
        for (i64 a = 0; a < ph; ++a) {
            const i64 yy = i * sh + a - top;
            if (yy < 0 || yy >= H) continue;
            for (i64 b = 0; b < pw; ++b) {
                const i64 xx = j * sw + b - left;
                if (xx < 0 || xx >= W) continue;
                sum += x[((n * H + yy) * W + xx) * C + c];
            }
        }
        y[idx] = sum / (T)window_count(i, j, H, W, ph, pw, sh, sw, top, left);
    }
}

// gx[n, y, x, c] = sum over windows covering (y, x) of gy / count   (a gather)
extern "C" __global__ void avgpool_backward(const T* gy, T* gx, const i64 total,
                                            const i64 H, const i64 W, const i64 C, const i64 Ho, const i64 Wo,
                                            const i64 ph, const i64 pw, const i64 sh, const i64 sw,
                                            const i64 top, const i64 left)
{
    GRID_STRIDE_LOOP(idx, total) {
        i64 r = idx;
        const i64 c = r % C;  r /= C;
        const i64 x_ = r % W; r /= W;
        const i64 y = r % H;
        const i64 n = r / H;
        T sum = 0;
        for (i64 a = 0; a < ph; ++a) {
            const i64 t = y + top - a;
            if (t < 0 || t % sh != 0 || t / sh >= Ho) continue;
            const i64 i = t / sh;
            for (i64 b = 0; b < pw; ++b) {
                const i64 u = x_ + left - b;
                if (u < 0 || u % sw != 0 || u / sw >= Wo) continue;
                const i64 j = u / sw;
                sum += gy[((n * Ho + i) * Wo + j) * C + c]
                       / (T)window_count(i, j, H, W, ph, pw, sh, sw, top, left);
            }
        }
        gx[idx] = sum;
    }
}

// gz = gy * [y > 0]: ReLU's backward from its output (the comparison as 0 or 1 times gy, as gy * (y > 0) in
// NumPy, so a NaN or inf in gy stays NaN where y <= 0)
extern "C" __global__ void relu_backward(const T* gy, const T* y, T* gz, const i64 total)
{
    GRID_STRIDE_LOOP(idx, total) {
        gz[idx] = gy[idx] * (T)(y[idx] > (T)0);
    }
}

// z = max(z + bias[c], 0) in place, one thread per element (without relu: z + bias[c]). Like np.maximum(z, 0):
// NaN stays NaN (v == v is false for it) and -0 becomes +0
extern "C" __global__ void bias_relu_forward(T* z, const T* bias, const i64 total, const i64 C, const i64 relu)
{
    GRID_STRIDE_LOOP(idx, total) {
        // a NaN operand's own bits, as NumPy's z + b on the CPU (z's when both are NaN): the GPU's float32
        // addition would give its canonical NaN, losing the sign; then max(v, 0) with NaN kept as it is
        const T a = z[idx], b = bias[idx % C];
        const T v = select_bits(a != a, a, select_bits(b != b, b, a + b));
        z[idx] = select_bits(relu && v <= (T)0, (T)0, v);
    }
}

// gz = gy * [y > 0], one thread per element, as relu_backward (the bias gradient, the sum of gz over the rows,
// is CuPy's reduction, launched by the Python function)
extern "C" __global__ void relu_bias_backward(const T* gy, const T* y, T* gz, const i64 total)
{
    GRID_STRIDE_LOOP(idx, total) {
        gz[idx] = gy[idx] * (T)(y[idx] > (T)0);
    }
}

// LRN across channels, one thread per element; the row of channels of element idx starts at idx - c.
// scale = k + alpha/size * (sum of x_j^2 over j = c-before .. c+after that exist), y = x * scale^(-beta).
// A scale outside [lo, hi] (common.lrn_safe_scales: float32's x^2 overflowed, or s^(-beta) would underflow;
// NaN too) is computed again in double, with the same constants and sums in the same order, and rounded once
// (for T = double, lo and hi are -inf and inf: only NaN goes there, and computes the same NaN)
extern "C" __global__ void lrn_forward(const T* x, T* y, T* scale, const i64 total, const i64 C,
                                       const i64 before, const i64 after,
                                       const T k, const T alpha_over_size, const T minus_beta,
                                       const T lo, const T hi)
{
    GRID_STRIDE_LOOP(idx, total) {
        const i64 c = idx % C;
        const i64 row = idx - c;
        T sum = 0;
        for (i64 j = c - before; j <= c + after; ++j) {
            if (j < 0 || j >= C) continue;
            const T v = x[row + j];
            sum += v * v;
        }
        const T s = k + alpha_over_size * sum;
        if (s >= lo && s <= hi) {
            scale[idx] = s;
            y[idx] = x[idx] * pow(s, minus_beta);
        } else {
            double sum64 = 0;
            for (i64 j = c - before; j <= c + after; ++j) {
                if (j < 0 || j >= C) continue;
                const double v = widen(x[row + j]);
                sum64 += v * v;
            }
            const double s64 = widen(k) + widen(alpha_over_size) * sum64;
            scale[idx] = TO_T(s64);
            y[idx] = TO_T(widen(x[idx]) * pow(s64, widen(minus_beta)));
        }
    }
}

// The scale s_j of lrn_backward's double path: as stored, or, where it is inf (float32's overflowed; s + s == s
// holds for no other nonzero float), alpha/size * (sum of x^2 over j's window) in double: k, which backward is
// not given, is below float32's resolution of a scale over 3.4e38
__device__ __forceinline__ double lrn_scale64(const T* x, const T* scale, const i64 row, const i64 j, const i64 C,
                                              const i64 before, const i64 after, const T alpha_over_size)
{
    const T s = scale[row + j];
    if (!(s != 0 && s + s == s)) return widen(s);
    double sum = 0;
    for (i64 t = j - before; t <= j + after; ++t) {
        if (t < 0 || t >= C) continue;
        const double v = widen(x[row + t]);
        sum += v * v;
    }
    return widen(alpha_over_size) * sum;
}

// gx_i = gy_i * s_i^(-beta) - coef * x_i * (sum of gy_j y_j / s_j over the windows j that contain i,
// j = c-after .. c+before), coef = 2 alpha beta / size   (a gather: each thread recomputes its terms).
// When one of those s_j is outside [lo, hi], the element is computed again in double (as lrn_forward)
extern "C" __global__ void lrn_backward(const T* gy, const T* x, const T* y, const T* scale, T* gx,
                                        const i64 total, const i64 C, const i64 before, const i64 after,
                                        const T alpha_over_size, const T minus_beta, const T coef,
                                        const T lo, const T hi)
{
    GRID_STRIDE_LOOP(idx, total) {
        const i64 c = idx % C;
        const i64 row = idx - c;
        T spread = 0;
        bool safe = true;
        for (i64 j = c - after; j <= c + before; ++j) {
            if (j < 0 || j >= C) continue;
            const T s = scale[row + j];
            safe = safe && s >= lo && s <= hi;
            spread += gy[row + j] * y[row + j] / s;
        }
        if (safe) {
            gx[idx] = gy[idx] * pow(scale[idx], minus_beta) - coef * x[idx] * spread;
        } else {
            double spread64 = 0;
            for (i64 j = c - after; j <= c + before; ++j) {
                if (j < 0 || j >= C) continue;
                spread64 += widen(gy[row + j]) * widen(y[row + j])
                            / lrn_scale64(x, scale, row, j, C, before, after, alpha_over_size);
            }
            const double s64 = lrn_scale64(x, scale, row, c, C, before, after, alpha_over_size);
            gx[idx] = TO_T(widen(gy[idx]) * pow(s64, widen(minus_beta))
                           - widen(coef) * widen(x[idx]) * spread64);
        }
    }
}

// Batch normalisation over the rows of (rows, C), one thread per element, with the statistics (mean, and
// inv_std = 1 / sqrt(var + eps)) from CuPy's reductions: x_hat = (x - mean[c]) * inv_std[c],
// y = x_hat * gamma[c] + beta[c] (nvcc may fuse the last product and sum into one FMA: an ulp at most)
extern "C" __global__ void batchnorm_forward(const T* x, const T* mean, const T* inv_std, const T* gamma,
                                             const T* beta, T* y, T* x_hat, const i64 total, const i64 C)
{
    GRID_STRIDE_LOOP(idx, total) {
        const i64 c = idx % C;
        const T h = (x[idx] - mean[c]) * inv_std[c];
        x_hat[idx] = h;
        y[idx] = h * gamma[c] + beta[c];
    }
}

// Its backward, one thread per element, with the sums over the rows (sum_g = sum of gy, sum_gh = sum of
// gy * x_hat, per channel) from CuPy's reductions; scale = gamma[c] * inv_std[c]:
// gx = ((gy - sum_g[c] / rows) - x_hat * (sum_gh[c] / rows)) * scale in training, gy * scale otherwise
extern "C" __global__ void batchnorm_backward(const T* gy, const T* x_hat, const T* sum_g, const T* sum_gh,
                                              const T* gamma, const T* inv_std, T* gx, const i64 total,
                                              const i64 C, const i64 rows, const i64 training)
{
    GRID_STRIDE_LOOP(idx, total) {
        const i64 c = idx % C;
        const T scale = gamma[c] * inv_std[c];
        gx[idx] = training ? ((gy[idx] - sum_g[c] / (T)rows) - x_hat[idx] * (sum_gh[c] / (T)rows)) * scale
                           : gy[idx] * scale;
    }
}

// Adam, in place, one thread per element (numpy_kernels.adam_update; each operation rounded as there):
// m += (g - m) * one_minus_beta_1;  v += (g * g - v) * one_minus_beta_2;  w -= (m * alpha) / (sqrt(v) + epsilon)
extern "C" __global__ void adam_update(T* w, const T* g, T* m, T* v, const i64 total, const T one_minus_beta_1,
                                       const T one_minus_beta_2, const T alpha, const T epsilon)
{
    GRID_STRIDE_LOOP(idx, total) {
        const T gi = g[idx];
        const T mi = add_rn(m[idx], mul_rn(sub_rn(gi, m[idx]), one_minus_beta_1));
        const T vi = add_rn(v[idx], mul_rn(sub_rn(mul_rn(gi, gi), v[idx]), one_minus_beta_2));
        m[idx] = mi;
        v[idx] = vi;
        w[idx] = sub_rn(w[idx], div_rn(mul_rn(mi, alpha), add_rn(sqrt_rn(vi), epsilon)));
    }
}

// SGD with momentum mu, in place, one thread per element (numpy_kernels.sgd_momentum_update):
// velocity = velocity * mu - lr * g;  w += velocity, or with Nesterov w += mu * velocity - lr * g
extern "C" __global__ void sgd_momentum_update(T* w, const T* g, T* velocity, const i64 total, const T lr,
                                               const T mu, const i64 nesterov)
{
    GRID_STRIDE_LOOP(idx, total) {
        const T step = mul_rn(lr, g[idx]);
        const T vi = sub_rn(mul_rn(velocity[idx], mu), step);
        velocity[idx] = vi;
        w[idx] = add_rn(w[idx], nesterov ? sub_rn(mul_rn(mu, vi), step) : vi);
    }
}
"""

_MODULES: dict = {}  # dtype -> cupy.RawModule, compiled on first use


def _kernel(name, dtype):
    """Return the compiled kernel ``name`` for ``dtype`` (float32 or float64), compiling once."""
    dtype = np.dtype(dtype)
    if dtype not in _TYPES:
        raise TypeError(f"tinynet CuPy kernel {name}: dtype {dtype} is not supported (float32 or float64)")
    module = _MODULES.get(dtype)
    if module is None:
        code = f"typedef {_TYPES[dtype]} T;\n" + _PRELUDE + _SOURCE
        module = cp.RawModule(code=code)
        _MODULES[dtype] = module
    return module.get_function(name)


def _launch(name, dtype, total, *args):
    """Launch kernel ``name`` over ``total`` elements; integers are passed as 64-bit."""
    if total == 0:
        return
    grid = min((total + _BLOCK - 1) // _BLOCK, _MAX_GRID)
    converted = [np.int64(a) if isinstance(a, (int, np.integer)) else a for a in args]
    _kernel(name, dtype)((grid,), (_BLOCK,), tuple(converted))


def _geometry(h, w, c, ho, wo, kh, kw, sh, sw, pads):
    """The integer arguments every kernel takes after ``total``, in order."""
    return (h, w, c, ho, wo, kh, kw, sh, sw, pads[0], pads[2])


def im2col(x, kh, kw, sh, sw, pads, pad_value=0.0):
    """Gather every (kh, kw) window of ``x`` into one row; see :func:`numpy_kernels.im2col`.

    Returns
    -------
    cols : cupy.ndarray, shape (N, Ho, Wo, kh, kw, C), dtype of ``x``
    """
    x = cp.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, kh, kw, sh, sw, pads)
    cols = cp.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    geo = _geometry(h, w, c, ho, wo, kh, kw, sh, sw, pads)
    _launch("im2col", x.dtype, cols.size, x, cols, cols.size, *geo, x.dtype.type(pad_value))
    return cols


def col2im(cols, x_shape, kh, kw, sh, sw, pads):
    """Sum every window row back onto its cells (the adjoint of im2col), one thread per input cell.

    Returns
    -------
    dx : cupy.ndarray, shape ``x_shape``, dtype of ``cols``
    """
    cols = cp.ascontiguousarray(cols)
    n, h, w, c = x_shape
    ho, wo = cols.shape[1], cols.shape[2]
    dx = cp.empty(tuple(x_shape), dtype=cols.dtype)
    geo = _geometry(h, w, c, ho, wo, kh, kw, sh, sw, pads)
    _launch("col2im", cols.dtype, dx.size, cols, dx, dx.size, *geo)
    return dx


def maxpool_forward(x, ph, pw, sh, sw, pads):
    """Max pooling with −inf padding and the window-local argmax ``a * pw + b`` (first max wins; the first
    NaN of a window wins and its output is NaN; all −inf real cells name the first real cell).

    Returns
    -------
    y : cupy.ndarray, shape (N, Ho, Wo, C)
    argmax : cupy.ndarray of int32, shape (N, Ho, Wo, C)
    """
    x = cp.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    y = cp.empty((n, ho, wo, c), dtype=x.dtype)
    argmax = cp.empty((n, ho, wo, c), dtype=cp.int32)
    geo = _geometry(h, w, c, ho, wo, ph, pw, sh, sw, pads)
    _launch("maxpool_forward", x.dtype, y.size, x, y, argmax, y.size, *geo, x.dtype.type(-np.inf))
    return y, argmax


def maxpool_backward(gy, argmax, x_shape, ph, pw, sh, sw, pads):
    """Route each output gradient to the cell that won its window, one thread per input cell.

    Returns
    -------
    gx : cupy.ndarray, shape ``x_shape``, dtype of ``gy``
    """
    gy = cp.ascontiguousarray(gy)
    argmax = cp.ascontiguousarray(argmax, dtype=cp.int32)
    n, h, w, c = x_shape
    ho, wo = gy.shape[1], gy.shape[2]
    gx = cp.empty(tuple(x_shape), dtype=gy.dtype)
    geo = _geometry(h, w, c, ho, wo, ph, pw, sh, sw, pads)
    _launch("maxpool_backward", gy.dtype, gx.size, gy, argmax, gx, gx.size, *geo)
    return gx


def avgpool_forward(x, ph, pw, sh, sw, pads):
    """Average pooling dividing by the number of real (unpadded) cells of each window.

    Returns
    -------
    y : cupy.ndarray, shape (N, Ho, Wo, C), dtype of ``x``
    """
    x = cp.ascontiguousarray(x)
    n, h, w, c = x.shape
    ho, wo = window_output_hw(h, w, ph, pw, sh, sw, pads)
    y = cp.empty((n, ho, wo, c), dtype=x.dtype)
    geo = _geometry(h, w, c, ho, wo, ph, pw, sh, sw, pads)
    _launch("avgpool_forward", x.dtype, y.size, x, y, y.size, *geo)
    return y


def avgpool_backward(gy, x_shape, ph, pw, sh, sw, pads):
    """Spread ``gy / count`` over the real cells of each window, one thread per input cell.

    Returns
    -------
    gx : cupy.ndarray, shape ``x_shape``, dtype of ``gy``
    """
    gy = cp.ascontiguousarray(gy)
    n, h, w, c = x_shape
    ho, wo = gy.shape[1], gy.shape[2]
    gx = cp.empty(tuple(x_shape), dtype=gy.dtype)
    geo = _geometry(h, w, c, ho, wo, ph, pw, sh, sw, pads)
    _launch("avgpool_backward", gy.dtype, gx.size, gy, gx, gx.size, *geo)
    return gx


def relu_backward(gy, y):
    """``gz = gy · [y > 0]``, one thread per element; see :func:`numpy_kernels.relu_backward`.

    A ``y`` of another dtype than ``gy`` (a float64 gradient for a float32 layer) takes the same
    expression as CuPy array code, since the kernel reads both as ``T``.

    Returns
    -------
    gz : cupy.ndarray, shape and dtype of ``gy``
    """
    if y.dtype != gy.dtype or gy.shape != y.shape:
        return gy * (y > 0)
    gy, y = cp.ascontiguousarray(gy), cp.ascontiguousarray(y)
    gz = cp.empty_like(gy)
    _launch("relu_backward", gy.dtype, gz.size, gy, y, gz, gz.size)
    return gz


def bias_relu_forward(z, bias, relu):
    """``z ← max(z + b, 0)`` in place, one thread per element; see :func:`numpy_kernels.bias_relu_forward`.

    Without a bias the kernel adds zeros (``−0 + 0 = +0`` and ``NaN + 0 = NaN``, so the result is
    ``np.maximum``'s); a z that is not C-contiguous, or a bias of another dtype, takes CuPy array code.

    Parameters
    ----------
    z : cupy.ndarray, shape (..., K); overwritten
    bias : cupy.ndarray, shape (K,), or None
    relu : bool

    Returns
    -------
    z : cupy.ndarray
        The argument itself.
    """
    if bias is None and not relu:
        return z
    if bias is None:
        bias = cp.zeros(z.shape[-1:], dtype=z.dtype)
    if not z.flags.c_contiguous or bias.dtype != z.dtype or bias.shape != z.shape[-1:] or z.ndim == 0:
        z += bias
        return cp.maximum(z, z.dtype.type(0), out=z) if relu else z
    bias = cp.ascontiguousarray(bias)
    _launch("bias_relu_forward", z.dtype, z.size, z, bias, z.size, z.shape[-1], int(bool(relu)))
    return z


def relu_bias_backward(gy, y, relu, want_bias):
    """``gz = gy · [y > 0]`` (one thread per element) and ``gbias = Σ_rows gz`` (CuPy's sum over the rows); see
    :func:`numpy_kernels.relu_bias_backward`.

    Returns
    -------
    gz : cupy.ndarray, shape and dtype of ``gy`` (``gy`` itself without ``relu``)
    gbias : cupy.ndarray, shape (K,), dtype of ``gy``, or None without ``want_bias``
    """
    if not relu:
        gz = gy
    elif y.dtype != gy.dtype or gy.shape != y.shape or gy.ndim == 0:
        gz = gy * (y > 0)
    else:
        gy, y = cp.ascontiguousarray(gy), cp.ascontiguousarray(y)
        gz = cp.empty_like(gy)
        _launch("relu_bias_backward", gy.dtype, gz.size, gy, y, gz, gz.size)
    gbias = gz.reshape(-1, gz.shape[-1]).sum(axis=0) if want_bias else None
    return gz, gbias


def lrn_forward(x, size, alpha, beta, k):
    """Local response normalisation across channels, one thread per element; see :func:`numpy_kernels.lrn_forward`.

    As there, an element whose float32 scale is outside :func:`~tinynet.kernels.common.lrn_safe_scales` is
    computed again in double.

    Returns
    -------
    y, scale : cupy.ndarray, shape and dtype of ``x``
    """
    x = cp.ascontiguousarray(x)
    y, scale = cp.empty_like(x), cp.empty_like(x)
    w = lrn_terms(x.dtype, size, alpha, beta, k)
    _launch("lrn_forward", x.dtype, x.size, x, y, scale, x.size, x.shape[-1], w.before, w.after,
            w.k, w.alpha_over_size, w.minus_beta, *lrn_safe_scales(x.dtype, beta))
    return y, scale


def lrn_backward(gy, x, y, scale, size, alpha, beta):
    """Backward of :func:`lrn_forward`, one thread per element (a gather over the windows containing it); an
    element whose window holds a float32 scale outside :func:`~tinynet.kernels.common.lrn_safe_scales` is
    computed again in double, as in :func:`numpy_kernels.lrn_backward`.

    Returns
    -------
    gx : cupy.ndarray, shape and dtype of ``gy``
    """
    gy, x, y, scale = (cp.ascontiguousarray(a) for a in (gy, x, y, scale))
    gx = cp.empty_like(gy)
    w = lrn_terms(gy.dtype, size, alpha, beta)
    _launch("lrn_backward", gy.dtype, gx.size, gy, x, y, scale, gx, gx.size, gy.shape[-1], w.before, w.after,
            w.alpha_over_size, w.minus_beta, w.coef, *lrn_safe_scales(gy.dtype, beta))
    return gx


def _vector(v, dtype):
    """A (C,) vector as the kernels read it: C-contiguous, of ``dtype``."""
    return cp.ascontiguousarray(v, dtype=dtype)


def batchnorm_forward(x, gamma, beta, mean, var, epsilon):
    """Batch normalisation over every axis but the last; see :func:`numpy_kernels.batchnorm_forward`.

    .. math:: \\hat x_{rc} = \\frac{x_{rc} − μ_c}{\\sqrt{σ^2_c + ε}}, \\qquad y_{rc} = \\hat x_{rc} γ_c + β_c

    The batch statistics (``mean`` and ``var`` None) are CuPy's reductions, in two passes as the reference
    (the mean, then the mean of the squared deviations); one thread per element then writes ``x_hat`` and
    ``y``.

    Returns
    -------
    y, x_hat : cupy.ndarray, shape and dtype of ``x``
    mean, var, inv_std : cupy.ndarray, shape (C,)
    """
    x = cp.ascontiguousarray(x)
    if mean is None:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes)
        deviation = x - mean
        var = (deviation * deviation).mean(axis=axes)
        del deviation
    inv_std = 1.0 / cp.sqrt(var + x.dtype.type(epsilon))
    y, x_hat = cp.empty_like(x), cp.empty_like(x)
    _launch("batchnorm_forward", x.dtype, y.size, x, _vector(mean, x.dtype), _vector(inv_std, x.dtype),
            _vector(gamma, x.dtype), _vector(beta, x.dtype), y, x_hat, y.size, x.shape[-1])
    return y, x_hat, mean, var, inv_std


def batchnorm_backward(gy, x_hat, gamma, inv_std, training):
    """Backward of :func:`batchnorm_forward`; see :func:`numpy_kernels.batchnorm_backward`.

    ``g_gamma = Σ gy·x_hat`` and ``g_beta = Σ gy`` over the rows are CuPy's reductions; one thread per element
    then writes ``gx = ((gy − g_beta/m) − x_hat·(g_gamma/m))·γ·inv_std`` (training) or ``gy·γ·inv_std``.

    Returns
    -------
    gx : cupy.ndarray, shape and dtype of ``gy``
    g_gamma, g_beta : cupy.ndarray, shape (C,)
    """
    gy, x_hat = cp.ascontiguousarray(gy), cp.ascontiguousarray(x_hat, dtype=gy.dtype)
    axes = tuple(range(gy.ndim - 1))
    g_gamma = (gy * x_hat).sum(axis=axes)
    g_beta = gy.sum(axis=axes)
    gx = cp.empty_like(gy)
    c = gy.shape[-1]
    _launch("batchnorm_backward", gy.dtype, gx.size, gy, x_hat, g_beta, g_gamma, _vector(gamma, gy.dtype),
            _vector(inv_std, gy.dtype), gx, gx.size, c, gy.size // c, int(bool(training)))
    return gx, g_gamma, g_beta


def _update_in_place(name, w, g, states, reference, *scalars):
    """Launch update kernel ``name`` on ``w`` and its ``states`` in place, or, where one of those is not
    C-contiguous (the kernel indexes them flat), run ``reference``: the NumPy reference's array code, which
    CuPy arrays run as CuPy operations."""
    if not all(a.flags.c_contiguous for a in (w, *states)):
        reference()
        return
    _launch(name, w.dtype, w.size, w, cp.ascontiguousarray(g, dtype=w.dtype), *states, w.size, *scalars)


def adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon):
    """One Adam update of a weight in place, one thread per element; see :func:`numpy_kernels.adam_update`.

    Every constant is rounded to ``w``'s dtype first and every operation to ``w``'s dtype on its own (no fused
    multiply-add), so the weight and both moments are the bits :class:`tinynet.optimizers.Adam`'s plain CuPy
    code gives, in one launch instead of about ten.

    Returns
    -------
    None
    """
    f = w.dtype.type
    _update_in_place("adam_update", w, g, (m, v),
                     lambda: numpy_kernels.adam_update(w, g, m, v, beta_1, beta_2, alpha, epsilon),
                     f(1.0 - beta_1), f(1.0 - beta_2), f(alpha), f(epsilon))


def sgd_momentum_update(w, g, velocity, lr, momentum, nesterov):
    """One SGD update with momentum of a weight in place, one thread per element; see
    :func:`numpy_kernels.sgd_momentum_update` (the same bits as :class:`tinynet.optimizers.SGD`'s plain CuPy
    code, in one launch instead of three to five).

    Returns
    -------
    None
    """
    f = w.dtype.type
    _update_in_place("sgd_momentum_update", w, g, (velocity,),
                     lambda: numpy_kernels.sgd_momentum_update(w, g, velocity, lr, momentum, nesterov),
                     f(lr), f(momentum), int(bool(nesterov)))
