"""``tinynet.blas``: stacked products, on BLAS's threads or shared among Python threads, equal NumPy's ``matmul``."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinynet import blas


@pytest.mark.parametrize("mode", blas.SHARING_MODES)
@pytest.mark.parametrize("shape", [(36, 64, 48, 40), (36, 300, 96, 128), (3, 5, 4, 2), (1, 700, 200, 150)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_matmul_equals_numpy(shape, dtype, mode):
    """On BLAS's threads; or shared among the threads (the big ones), or on one thread (the small ones);
    transposed views too."""
    b_, m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((b_, m, k)).astype(dtype), rng.standard_normal((b_, k, n)).astype(dtype)
    expected = np.matmul(a, b)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for left in (a, np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)):
        with blas.shared(mode):
            out = blas.batched_matmul(left, b)
        assert out.dtype == dtype and out.shape == expected.shape and out.flags.c_contiguous
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.abs(expected).max())
    np.testing.assert_allclose(blas.one_thread_matmul(a[0], b[0]), a[0] @ b[0], rtol=tol, atol=tol * k)
    with blas.shared(mode):
        np.testing.assert_allclose(blas.small_matmul(a[0], b[0]), a[0] @ b[0], rtol=tol, atol=tol * k)


def test_without_threadpoolctl_it_is_numpys_matmul(monkeypatch):
    monkeypatch.setattr(blas, "_pool_and_controller", lambda n: (None, None))
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((36, 300, 96)), rng.standard_normal((36, 96, 128))
    with blas.shared("threads"):
        np.testing.assert_array_equal(blas.batched_matmul(a, b), np.matmul(a, b))
    np.testing.assert_array_equal(blas.one_thread_matmul(a[0], b[0]), a[0] @ b[0])


def test_blas_threads_are_restored():
    """After a shared call BLAS has the threads it had before (threadpoolctl's limit is undone)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    with blas.shared("threads"):
        blas.batched_matmul(np.ones((36, 300, 96)), np.ones((36, 96, 128)))
    after = [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    assert after == before


def test_sharing_setting():
    """'blas' by default; set, scoped and restored; anything else refused with the accepted values."""
    assert blas.sharing() == "blas"
    with blas.shared("threads"):
        assert blas.sharing() == "threads"
    assert blas.sharing() == "blas"
    for bad in ("openmp", None, 2):
        with pytest.raises(ValueError, match=r"set_sharing: expected one of \('blas', 'threads'\)"):
            blas.set_sharing(bad)
        with pytest.raises(ValueError, match="tinynet.blas.shared"):
            blas.shared(bad)
    assert blas.sharing() == "blas"


@pytest.mark.parametrize("value, expected, warns", [("threads", "threads", False), (" BLAS ", "blas", False),
                                                     ("2", "blas", True)])
def test_sharing_from_the_environment(value, expected, warns):
    code = ("import warnings; warnings.simplefilter('always'); import tinynet.blas as b; print(b.sharing())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TINYNET_BLAS_SHARING": value})
    assert run.stdout.strip() == expected
    assert ("ignoring TINYNET_BLAS_SHARING='2'" in run.stderr) == warns
