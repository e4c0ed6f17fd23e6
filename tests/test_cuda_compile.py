"""The CUDA C of :mod:`tinynet.kernels.cupy_kernels` through the real CUDA compilers, and its Python launches.

Runs without a GPU. :mod:`cupy_kernels` is loaded with a NumPy stand-in for CuPy that records what would
reach the GPU: the exact code given to ``cupy.RawModule`` (one per dtype) and every kernel launch (grid,
block, argument tuple). Then

* ``test_every_backend_implements_exactly_the_kernel_names`` checks the one list of kernels,
  :data:`tinynet.kernels.KERNEL_NAMES`, against every place that implements it: the dispatchers in
  :mod:`tinynet.kernels`, the public functions of ``numpy_kernels``, ``numba_kernels`` and ``cupy_kernels``
  (with the reference's parameters), the ``extern "C"`` kernels of the CUDA source, and the kernel each
  CuPy function launches;
* ``test_launches_match_the_kernel_signatures`` (no compiler needed) checks each launch against the
  ``extern "C" __global__`` signature in that code: the argument count, each argument's kind (array of T,
  array of int32, 64-bit integer, scalar T), inputs as ``const`` pointers and outputs as writable ones in
  the right order, and every integer and scalar by parameter name (``H`` is the input height, ``top`` the
  top padding, ...), on a shape whose sizes are all different, so a swapped argument shows;
* ``test_nvcc`` compiles that code with ``nvcc`` to PTX and to SASS (ptxas), warnings as errors, for
  float32 and float64 and several architectures (H200 is sm_90), and checks in the PTX that the kernels
  are unmangled ``.entry`` symbols whose parameter lists match the launches: same count, 64 bits for
  pointers and integers, ``.f32``/``.f64`` for the T scalars, and the parameters the kernel dereferences
  (``cvta.to.global``) exactly those Python passes arrays for; skipped without nvcc;
* ``test_nvrtc`` does the same through NVRTC with the options CuPy's ``RawModule`` adds, when CuPy and its
  NVRTC library import (no device needed); skipped otherwise.

A mismatch between the Python argument list and a kernel signature is undefined behaviour on the GPU
(arguments read from the wrong offsets) and cannot show anywhere else, hence these checks.
"""
import importlib.util
import inspect
import re
import shutil
import subprocess

import numpy as np
import pytest

from tinynet import backend, kernels
from tinynet.kernels import CPU_KERNEL_NAMES, KERNEL_NAMES
from tinynet.kernels import numpy_kernels
from tinynet.kernels.common import lrn_safe_scales

from helpers import cuda_kernel_signatures, cuda_source, load_cupy_kernels

DTYPES = [np.float32, np.float64]
ARCHS = ["sm_80", "sm_90"]  # A100, H100/H200

# One geometry in which every integer a kernel receives is different, so a swapped argument is caught:
# x (N, H, W, C) = (2, 17, 19, 8), window (5, 4), strides (3, 2), pads (top, bottom, left, right) = (1, 2, 0, 3)
N, H, W, C = 2, 17, 19, 8
KH, KW, SH, SW = 5, 4, 3, 2
PADS = (1, 2, 0, 3)
HO, WO = (H + PADS[0] + PADS[1] - KH) // SH + 1, (W + PADS[2] + PADS[3] - KW) // SW + 1  # 6, 10
# the optimizers' updates: (beta_1, beta_2, alpha, epsilon) and (lr, momentum, nesterov), all different
ADAM = (0.8, 0.995, 0.003, 1e-6)
SGD = (0.05, 0.9, True)
# LRN: an even window, so that the channels before and after differ (1 and 2)
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 4, 0.3, 0.6, 2.0
# The value every scalar kernel parameter must receive, by its name in the CUDA source (``total`` is
# checked separately: the size of the kernel's first output); a function of the dtype where it depends on it
# (LRN's bounds of the scales float32 computes itself: common.lrn_safe_scales).
SCALARS = {"lo": lambda dtype: lrn_safe_scales(dtype, LRN_BETA)[0],
           "hi": lambda dtype: lrn_safe_scales(dtype, LRN_BETA)[1],
           "H": H, "W": W, "C": C, "Ho": HO, "Wo": WO, "kh": KH, "kw": KW, "ph": KH, "pw": KW,
           "sh": SH, "sw": SW, "top": PADS[0], "left": PADS[2], "pad_value": 0.0, "neg_inf": -np.inf,
           "before": (LRN_SIZE - 1) // 2, "after": LRN_SIZE - 1 - (LRN_SIZE - 1) // 2, "k": LRN_K,
           "alpha_over_size": LRN_ALPHA / LRN_SIZE, "minus_beta": -LRN_BETA,
           "coef": 2.0 * LRN_ALPHA * LRN_BETA / LRN_SIZE, "relu": 1,
           "rows": N * H * W, "training": 1,  # batch normalisation of x viewed as (N·H·W, C) rows, in training
           # the optimizers' updates: Adam's constants as its step rounds them to T; SGD with Nesterov momentum
           "one_minus_beta_1": 1.0 - ADAM[0], "one_minus_beta_2": 1.0 - ADAM[1], "alpha": ADAM[2],
           "epsilon": ADAM[3], "lr": SGD[0], "mu": SGD[1], "nesterov": 1}


# --------------------------------------------------------------- cupy_kernels.py on a recording stand-in
class _Recorder:
    """Stands in for ``cupy.RawModule``: keeps the code and options, and records every launch."""

    modules = None  # list of (code, options), set per load
    launches = None  # list of dicts, set per load

    def __init__(self, code=None, options=(), **kwargs):
        assert not kwargs, f"RawModule options the tests do not know: {kwargs}"
        self.code, self.options = code, tuple(options)
        self.modules.append((code, self.options))

    def get_function(self, name):
        def launch(grid, block, args, **kwargs):
            self.launches.append(dict(name=name, code=self.code, options=self.options, grid=grid, block=block,
                                      args=args, kwargs=kwargs))
        return launch


@pytest.fixture(scope="module")
def recorded():
    """``(module, modules, launches)``: cupy_kernels.py loaded on NumPy, after one call of every kernel per dtype.

    ``modules``: ``{dtype: (code, options)}`` as given to ``cupy.RawModule``; ``launches``: ``{(name, dtype):
    (launch, inputs, outputs)}`` with the launch record, the arrays the Python function was given and the
    arrays it returned.
    """
    recorder = type("Recorder", (_Recorder,), {"modules": [], "launches": []})
    module = load_cupy_kernels(recorder)

    rng = np.random.default_rng(0)
    modules, launches = {}, {}
    for dtype in DTYPES:
        x = rng.standard_normal((N, H, W, C)).astype(dtype)
        cols = rng.standard_normal((N, HO, WO, KH, KW, C)).astype(dtype)
        gy = rng.standard_normal((N, HO, WO, C)).astype(dtype)
        argmax = rng.integers(0, KH * KW, (N, HO, WO, C)).astype(np.int32)
        geo = (KH, KW, SH, SW, PADS)
        lrn = (LRN_SIZE, LRN_ALPHA, LRN_BETA)
        lrn_gy, lrn_y = (rng.standard_normal(x.shape).astype(dtype) for _ in range(2))
        scale = (rng.random(x.shape) + 1).astype(dtype)
        bias = rng.standard_normal(C).astype(dtype)
        inv_std = (rng.random(C) + 0.5).astype(dtype)
        adam = [gy.copy(), gy, gy.copy(), np.abs(gy)]  # w, g, m, v
        sgd = [gy.copy(), gy, gy.copy()]  # w, g, velocity
        bn = {}

        def bn_forward():  # the kernel writes y and x_hat; mean, var and inv_std come from CuPy's reductions
            bn["forward"] = module.batchnorm_forward(x, bias, inv_std, None, None, 1e-3)
            return bn["forward"][:2]

        def bn_backward():  # the kernel writes gx; g_gamma and g_beta (CuPy's reductions) are what it reads
            bn["backward"] = module.batchnorm_backward(lrn_gy, lrn_y, bias, inv_std, True)
            return bn["backward"][:1]

        calls = {  # name: (inputs, the call), one per name in KERNEL_NAMES
            "im2col": ((x,), lambda: module.im2col(x, *geo)),
            "col2im": ((cols,), lambda: module.col2im(cols, x.shape, *geo)),
            "maxpool_forward": ((x,), lambda: module.maxpool_forward(x, *geo)),
            "maxpool_backward": ((gy, argmax), lambda: module.maxpool_backward(gy, argmax, x.shape, *geo)),
            "avgpool_forward": ((x,), lambda: module.avgpool_forward(x, *geo)),
            "avgpool_backward": ((gy,), lambda: module.avgpool_backward(gy, x.shape, *geo)),
            "relu_backward": ((lrn_gy, lrn_y), lambda: module.relu_backward(lrn_gy, lrn_y)),
            # in place: z is the kernel's one output (returned), the bias its one input
            "bias_relu_forward": ((bias,), lambda: module.bias_relu_forward(gy.copy(), bias, True)),
            # the kernel writes gz; the bias gradient is CuPy's own sum of gz (no launch of ours), so only gz
            # is an output of the launch
            "relu_bias_backward": ((lrn_gy, lrn_y), lambda: module.relu_bias_backward(lrn_gy, lrn_y, True, True)[:1]),
            "lrn_forward": ((x,), lambda: module.lrn_forward(x, *lrn, LRN_K)),
            "lrn_backward": ((lrn_gy, x, lrn_y, scale), lambda: module.lrn_backward(lrn_gy, x, lrn_y, scale, *lrn)),
            # inputs computed by the call itself (the statistics, the sums) are named after it, as a function
            "batchnorm_forward": (lambda: (x, bn["forward"][2], bn["forward"][4], bias, inv_std), bn_forward),
            "batchnorm_backward": (lambda: (lrn_gy, lrn_y, bn["backward"][2], bn["backward"][1], bias, inv_std),
                                   bn_backward),
            # in place: the weight and its state are the outputs (returned here), the gradient the one input
            "adam_update": ((gy,), lambda: module.adam_update(*adam, *ADAM) or (adam[0], *adam[2:])),
            "sgd_momentum_update": ((gy,), lambda: module.sgd_momentum_update(*sgd, *SGD) or (sgd[0], sgd[2])),
        }
        for name, (inputs, call) in calls.items():
            before = len(recorder.launches)
            with np.errstate(all="ignore"):  # the stand-in launches nothing: CuPy's own sums (batch norm's
                outputs = call()             # statistics) read uninitialised outputs, NaN at times
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            inputs = inputs() if callable(inputs) else inputs
            assert len(recorder.launches) == before + 1, f"{name} ({np.dtype(dtype)}): expected one launch"
            launches[name, dtype] = (recorder.launches[-1], inputs, outputs)
        assert len(recorder.modules) == 1, f"{np.dtype(dtype)}: {len(recorder.modules)} RawModules, expected 1"
        modules[dtype] = recorder.modules.pop()
    return module, modules, launches


# ------------------------------------------------------------------------------- the one list of kernels
def _public_functions(module):
    """The public functions ``module`` defines itself (not what it imports)."""
    return {name for name, f in vars(module).items()
            if inspect.isfunction(f) and f.__module__ == module.__name__ and not name.startswith("_")}


def test_every_backend_implements_exactly_the_kernel_names(recorded):
    """``tinynet.kernels.KERNEL_NAMES`` is the one list: the dispatchers, each backend module (its public
    functions, with the reference's parameters), the CUDA source and the CuPy launches all match it."""
    module, _, launches = recorded
    names = set(KERNEL_NAMES)
    assert len(names) == len(KERNEL_NAMES), "a name appears twice in KERNEL_NAMES"
    cpu_only = set(CPU_KERNEL_NAMES)  # the CPU backends implement these too; CuPy does not
    assert not cpu_only & names, "a name is in both KERNEL_NAMES and CPU_KERNEL_NAMES"
    for name in KERNEL_NAMES + CPU_KERNEL_NAMES:  # the dispatchers, documented by the reference
        assert inspect.isfunction(getattr(kernels, name)), name
        assert getattr(kernels, name).__doc__ == getattr(numpy_kernels, name).__doc__, name
    backends = {"numpy_kernels": (numpy_kernels, names | cpu_only),
                "cupy_kernels (on the NumPy stand-in)": (module, names)}
    if backend.numba_available():
        backends["numba_kernels"] = (kernels.backend_module("numba"), names | cpu_only)
    for label, (implementation, expected) in backends.items():
        assert _public_functions(implementation) == expected, f"{label}: {sorted(_public_functions(implementation))}"
        for name in expected:
            params = list(inspect.signature(getattr(implementation, name)).parameters)
            reference = list(inspect.signature(getattr(numpy_kernels, name)).parameters)
            assert params == reference, f"{label}.{name}{tuple(params)}: the reference takes {tuple(reference)}"
    assert set(cuda_kernel_signatures(cuda_source())) == names, "the extern \"C\" kernels of the CUDA source"
    for dtype in DTYPES:  # each CuPy function launches the CUDA kernel of its own name
        assert {name for name, d in launches if d is dtype} == names
        for name in KERNEL_NAMES:
            assert launches[name, dtype][0]["name"] == name, f"cupy_kernels.{name} launches another kernel"


# ------------------------------------------------------------------------ the CUDA signatures and the PTX
def expected_kind(arg, dtype, outputs):
    """The C parameter type a launch argument must meet (top-level ``const`` aside), or an error string."""
    if isinstance(arg, np.ndarray):
        base = {np.dtype(dtype): "T", np.dtype(np.int32): "int"}.get(arg.dtype)
        if base is None:
            return f"an array of {arg.dtype}"
        writable = any(arg is out for out in outputs)
        return f"{base}*" if writable else f"const {base}*"
    if type(arg) is np.int64:
        return "i64"
    if type(arg) is np.dtype(dtype).type:
        return "T"
    return f"{type(arg).__name__} (CuPy's conversion of it is not what the kernel expects)"


def ptx_entries(ptx):
    """``{name: (parameter types, pointer parameters)}`` of the ``.entry`` functions of a PTX text.

    The parameter types are PTX's (``.u64``, ``.f32``, ...), which do not tell a pointer from a 64-bit
    integer; the pointer parameters are the indices of those the kernel body turns into global addresses
    (``cvta.to.global``), which every pointer a kernel dereferences goes through.
    """
    entries = {}
    heads = list(re.finditer(r"\.visible\s+\.entry\s+(\w+)\s*\(([^)]*)\)", ptx))
    for k, head in enumerate(heads):
        name, params = head.groups()
        types = []
        for p in filter(None, (q.strip() for q in params.split(","))):
            tokens = p.split()
            assert tokens[0] == ".param", p
            types.append(tokens[1])
        body = ptx[head.end():heads[k + 1].start() if k + 1 < len(heads) else len(ptx)]
        loaded = {reg: int(i) for reg, i in re.findall(rf"ld\.param\.\w+\s+(%\w+),\s*\[{name}_param_(\d+)\]", body)}
        global_ = set(re.findall(r"cvta\.to\.global\.u64\s+%\w+,\s*(%\w+)", body))
        entries[name] = (types, {loaded[reg] for reg in global_ if reg in loaded})
    return entries


def check_ptx(ptx, dtype, launches):
    """The PTX has every kernel, unmangled, with parameters matching each recorded launch."""
    entries = ptx_entries(ptx)
    assert sorted(entries) == sorted(KERNEL_NAMES), f"PTX entries {sorted(entries)}"
    scalar = {np.dtype(np.float32): ".f32", np.dtype(np.float64): ".f64"}[np.dtype(dtype)]
    for name in KERNEL_NAMES:
        launch, _, _ = launches[name, dtype]
        (types, pointers), args = entries[name], launch["args"]
        assert len(types) == len(args), f"{name}: {len(types)} parameters in the PTX, Python passes {len(args)}"
        for i, (ptx_type, arg) in enumerate(zip(types, args)):
            where = f"{name} ({np.dtype(dtype)}) parameter {i}: {ptx_type} in the PTX"
            if isinstance(arg, np.ndarray) or type(arg) is np.int64:  # a pointer or a 64-bit integer
                assert ptx_type in (".u64", ".s64", ".b64"), f"{where}, Python passes 64 bits"
            else:
                assert ptx_type == scalar, f"{where}, Python passes {type(arg).__name__}"
        arrays = {i for i, arg in enumerate(args) if isinstance(arg, np.ndarray)}
        assert pointers == arrays, f"{name}: parameters {sorted(pointers)} used as pointers, Python passes " \
                                   f"arrays as {sorted(arrays)}"


def check_rounded_apart(ptx):
    """The optimizers' update kernels round every operation on its own, as CuPy's separate operations do: no
    fused multiply-add in their PTX (which would keep a product unrounded and change the weights' last bits), and
    each arithmetic instruction rounds to nearest (``.rn``)."""
    bodies = dict(re.findall(r"\.visible\s+\.entry\s+(\w+)\s*\([^)]*\)(.*?)(?=^\s*(?:\.\w+\s+)*\.(?:entry|func)\b|\Z)",
                             ptx, re.S | re.M))  # up to the next kernel or device function
    for name in ("adam_update", "sgd_momentum_update"):
        body = bodies[name]
        assert not re.search(r"\b(fma|mad)\.", body), f"{name}: a fused multiply-add in its PTX"
        arithmetic = re.findall(r"\b(?:add|sub|mul|div|sqrt)\.(?:\w+\.)*f(?:32|64)\b", body)
        assert arithmetic and all(".rn" in op for op in arithmetic), f"{name}: {sorted(set(arithmetic))}"


def test_launches_match_the_kernel_signatures(recorded):
    module, modules, launches = recorded
    for dtype in DTYPES:
        code, options = modules[dtype]
        # what CuPy compiles is what test_kernels.py runs on the CPU, after the typedef of T
        ctype = {np.float32: "float", np.float64: "double"}[dtype]
        assert code == f"typedef {ctype} T;\n" + cuda_source()
        signatures = cuda_kernel_signatures(code)
        assert sorted(signatures) == sorted(KERNEL_NAMES), f"kernels in the source: {sorted(signatures)}"
        for name in KERNEL_NAMES:
            launch, inputs, outputs = launches[name, dtype]
            where = f"{name} ({np.dtype(dtype)})"
            assert launch["code"] == code and not launch["kwargs"], where
            assert launch["block"] == (module._BLOCK,) and len(launch["grid"]) == 1, where
            params, args = signatures[name], launch["args"]
            assert len(args) == len(params), (
                f"{where}: Python passes {len(args)} arguments, the kernel takes {len(params)}: "
                f"{[p for _, p in params]}")
            total = None
            pointers_in, pointers_out = [], []
            for (ctype_, pname), arg in zip(params, args):
                kind = expected_kind(arg, dtype, outputs)
                declared = re.sub(r"^const (?!.*\*)", "", ctype_)  # a by-value parameter's const is no concern
                assert declared == kind, f"{where}: parameter '{ctype_} {pname}' gets {kind}"
                if kind.endswith("*"):
                    (pointers_in if kind.startswith("const") else pointers_out).append(arg)
                elif pname == "total":
                    total = int(arg)
                else:
                    assert pname in SCALARS, f"{where}: parameter '{pname}' has no expected value in SCALARS"
                    expected = SCALARS[pname](dtype) if callable(SCALARS[pname]) else SCALARS[pname]
                    expected = expected if kind == "i64" else np.dtype(dtype).type(expected)
                    assert arg == expected, f"{where}: '{pname}' gets {arg}, expected {expected}"
            # inputs read through const pointers, in order; every returned array written, in order
            assert len(pointers_in) == len(inputs) and all(
                np.shares_memory(p, a) for p, a in zip(pointers_in, inputs)), f"{where}: input pointers"
            assert len(pointers_out) == len(outputs) and all(
                p is o for p, o in zip(pointers_out, outputs)), f"{where}: output pointers"
            assert total == outputs[0].size, f"{where}: total {total}, not the size of the output {outputs[0].shape}"
            threads = launch["grid"][0] * launch["block"][0]
            assert min(total, module._MAX_GRID * module._BLOCK) <= threads < total + module._BLOCK, where


# ---------------------------------------------------------------------------------------------- nvcc
@pytest.fixture(scope="module")
def nvcc():
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("nvcc (the CUDA toolkit) not found")
    return path


@pytest.fixture(scope="module")
def nvcc_archs(nvcc):
    """The real architectures this nvcc compiles for (``sm_80``, ...)."""
    done = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60)
    return set(done.stdout.split()) if done.returncode == 0 else set(ARCHS)


def _nvcc(nvcc, code, tmp_path, *flags):
    src = tmp_path / "kernels.cu"
    src.write_text(code)
    out = tmp_path / "kernels.out"
    # the C++ standard and flush-to-zero CuPy 14's RawModule compiles with; warnings are errors
    cmd = [nvcc, *flags, "-std=c++17", "-ftz=true", "--Werror", "all-warnings", str(src), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nvcc(nvcc, nvcc_archs, recorded, tmp_path, dtype, arch):
    """nvcc compiles the RawModule code to PTX and SASS without a warning; the PTX matches the launches."""
    if arch not in nvcc_archs:
        pytest.skip(f"this nvcc does not compile for {arch}")
    _, modules, launches = recorded
    code, options = modules[dtype]
    assert options == (), f"RawModule options {options}: pass them to nvcc here too"
    ptx = _nvcc(nvcc, code, tmp_path, "-ptx", f"-arch={arch}").read_text()
    check_ptx(ptx, dtype, launches)
    check_rounded_apart(ptx)
    cubin = _nvcc(nvcc, code, tmp_path, "--cubin", f"-arch={arch}", "-Xptxas", "-Werror")
    assert cubin.stat().st_size > 0


# --------------------------------------------------------------------------------------------- NVRTC
@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's NVRTC binding, when CuPy and the NVRTC library load (no CUDA device or driver needed)."""
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy not installed")
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as e:  # no libnvrtc, ...
        pytest.skip(f"NVRTC not usable: {type(e).__name__}: {e}")
    return nvrtc


def _nvrtc(nvrtc, code, options, get):
    prog = nvrtc.createProgram(code, "kernels.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as e:
            pytest.fail(f"NVRTC {options}: {e}\n{nvrtc.getProgramLog(prog)}")
        log = nvrtc.getProgramLog(prog).strip("\x00\n ")
        return get(prog), log
    finally:
        nvrtc.destroyProgram(prog)


@pytest.mark.parametrize("arch", [a[len("sm_"):] for a in ARCHS])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nvrtc(nvrtc, recorded, dtype, arch):
    """NVRTC, with the options CuPy's RawModule uses, compiles the code without a warning; PTX as with nvcc."""
    _, modules, launches = recorded
    code, options = modules[dtype]
    # the options RawModule compiles with: cupy._core.core.assemble_cupy_compiler_options (C++ standard,
    # include paths) then cupy.cuda.compiler (flush-to-zero, the architecture, device code by default)
    from cupy._core import core

    # (fallback for a CuPy without that function: CuPy 14's default C++ standard)
    assemble = getattr(core, "assemble_cupy_compiler_options", lambda opts: opts + ("--std=c++17",))
    try:
        common = assemble(options)
    except RuntimeError as e:  # e.g. no CUDA headers found: RawModule would fail alike
        pytest.fail(f"CuPy cannot assemble its compiler options, so RawModule cannot compile: {e}")
    common += ("-ftz=true", "--device-as-default-execution-space")
    ptx, log = _nvrtc(nvrtc, code, common + (f"-arch=compute_{arch}",), nvrtc.getPTX)
    assert "warning" not in log.lower(), log
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    check_ptx(ptx, dtype, launches)
    check_rounded_apart(ptx)
    cubin, log = _nvrtc(nvrtc, code, common + (f"-arch=sm_{arch}",), nvrtc.getCUBIN)
    assert "warning" not in log.lower(), log
    assert len(cubin) > 0
