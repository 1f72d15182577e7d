"""A compiled kernel for the multi-step LIF (``lif.c``), built on first use with the system C
compiler and loaded with :mod:`ctypes` (no PyTorch headers: it compiles in well under a second).

It computes what :class:`compendium.spiking.neuron._LIFSequence`'s eager kernel computes,
bit for bit (same operations, same fused multiply-adds; ``tests/test_spiking.py`` holds them
equal), in one pass over memory per direction instead of two (forward) and six (backward)
tensor passes per time step: on a 2-core CPU the LIF forward + backward of the bench's conv
SNN drops from about a third of a training step to a few percent. The same library holds the
static-rate kernels of :func:`compendium.spiking.neuron.lif_static_rate`, the LIF + 2×2
max-pool kernels of :func:`compendium.spiking.neuron.lif_maxpool2d` (channels-last slices:
the full-resolution spikes and the pooling indices are never stored; the backward pass
recomputes them from the membranes), :func:`random_words`, the counter-based random
words of the graph chapter's dropout masks, and the Hebbian trace step of the hybrid
chapter's plastic synapse (:func:`trace_update_forward`, used by
:func:`compendium.plasticity.hybrid.trace_update`).

The shared library is cached under ``$COMPENDIUM_NATIVE_CACHE`` (default
``~/.cache/compendium/native``), keyed by the source, the compiler and the CPU's feature flags
(it is built with ``-march=native``, ``-fno-trapping-math`` so that its selects vectorise
without AVX-512 masks, and 512-bit vectors where the CPU has AVX-512). Without a
C compiler, or when the build fails, or with ``COMPENDIUM_NATIVE=0``, :func:`library` returns
``None`` and the eager kernel runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

_SRC = Path(__file__).with_name("lif.c")
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared",
          "-pthread"]
# -fno-trapping-math lets GCC turn the kernels' per-element selects (the surrogate window
# |u - th| < w/2, the spike u > th, the gradient flags) into vector blends: under the default
# -ftrapping-math a floating-point comparison may trap, so GCC will not compute it where the
# source does not, and without AVX-512's masked operations it leaves the backward loops scalar
# ("control flow in loop"). Values do not change: the same IEEE operations in the same order
# and rounding (-ffp-contract=off still holds; no reassociation, reciprocal, finite-math or
# signed-zero assumption, and no flush-to-zero, which only -ffast-math links in; the kernels
# compare with < <= > >= only, false with NaN either way); only the exception flags, which
# nothing here reads, may be raised where they were not. On a 2-core AVX2 machine (2 threads)
# the multi-step LIF backward at a ResNet block's shape (T=4) took 0.084x its time, the
# training step of the tdbn chapter's ResNet-32 0.83x and of msresnet's MS-ResNet-44 0.84x
# (bench/lif_kernel.py).
# With OpenMP the kernel binds to the libgomp.so.1 that torch has already loaded (the loader
# reuses a loaded library of the same soname) and runs on ATen's own warm worker threads;
# separate pthreads would compete with those still spinning after a convolution.
_OPENMP = ["-fopenmp"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False

_f32p, _i64, _i32, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


def _cache_dir() -> Path:
    if os.environ.get("COMPENDIUM_NATIVE_CACHE"):
        return Path(os.environ["COMPENDIUM_NATIVE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "compendium" / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _vector_width_flags() -> list[str]:
    """``-mprefer-vector-width=512`` on an x86-64 CPU with AVX-512: GCC's ``-march=native`` keeps
    256-bit vectors there by default, and the kernels' loops are element-wise, so full-width
    vectors give the same numbers bit for bit (no reduction is reassociated; ``-ffp-contract=off``)
    and run the LIF steps in 0.73–0.92 × the time (rate backward … multi-step forward, measured
    on the reference machine). Other machines keep GCC's choice (the option is x86-only)."""
    if platform.machine() in ("x86_64", "AMD64") and " avx512f" in f" {_cpu_flags()} ":
        return ["-mprefer-vector-width=512"]
    return []


def _build(base: list[str] | None = None) -> ctypes.CDLL | None:
    """Compile (or find in the cache) and load the library with the compiler options ``base``
    (default :data:`_FLAGS`) and the CPU's vector width; ``None`` where it cannot be built.
    ``bench/lif_kernel.py`` passes other options to time a build against this one."""
    if os.environ.get("COMPENDIUM_NATIVE", "1") == "0":
        return None
    base = _FLAGS if base is None else base
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.system() != "Linux":
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        flags = base + _vector_width_flags()
        key = hashlib.sha256("\0".join([_SRC.read_text(), " ".join(flags + _OPENMP), cc, version,
                                        platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
        out = _cache_dir() / f"lif-{key}.so"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
            # without OpenMP the kernel runs its own pthreads; a compiler that rejects the vector
            # width keeps its default width rather than losing the library
            attempts = [[*flags, *_OPENMP], flags]
            if flags != base:
                attempts += [[*base, *_OPENMP], base]
            try:
                for i, opts in enumerate(attempts):
                    try:
                        subprocess.run([cc, *opts, "-o", tmp, str(_SRC), "-lm"], check=True, capture_output=True,
                                       text=True, timeout=120)
                        break
                    except subprocess.CalledProcessError:
                        if i == len(attempts) - 1:
                            raise
                os.replace(tmp, out)  # atomic: concurrent builds (parallel chapters) never see half a file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(out))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        warnings.warn(f"compendium: the native LIF kernel could not be built ({detail}); using the eager kernel",
                      RuntimeWarning, stacklevel=3)
        return None
    lib.lif_forward.argtypes = [_f32p, _i64, _f32p, _f32p, _i64, _i32, _f32, _f32, _i32, _i32]
    lib.lif_backward.argtypes = [_f32p, _f32p, _i64, _f32p, _i64, _f32p, _f32p, _i64, _i32, _f32, _f32,
                                 _i32, _i32, _f32, _f32, _f32, _f32, _i32]
    lib.lif_static_rate_forward.argtypes = [_f32p, _f32p, _i32, _f32, _f32p, _i64, _i32, _f32, _f32, _i32, _i32]
    lib.lif_static_rate_backward.argtypes = [_f32p, _f32p, _i32, _f32, _f32p, _f32p, _i64, _i32, _f32, _f32, _i32,
                                             _i32, _f32, _f32, _f32, _f32, _f32p, _i32]
    lib.lif_pool_forward.argtypes = [_f32p, _i64, _f32p, _f32p, _i64, _i64, _i64, _i64, _i32, _f32, _f32, _i32, _i32]
    lib.lif_pool_backward.argtypes = [_f32p, _f32p, _i64, _f32p, _i64, _i64, _i64, _i64, _i32, _f32, _f32, _i32, _i32,
                                      _f32, _f32, _f32, _f32, _i32]
    lib.lif_pool_forward.restype = lib.lif_pool_backward.restype = _i32
    lib.rate_scratch_floats.argtypes, lib.rate_scratch_floats.restype = [_i32, _i32], _i64
    lib.random_words.argtypes, lib.random_words.restype = [_f32p, _i64, ctypes.c_uint64, _i32], _i32
    lib.lif_forward.restype = lib.lif_backward.restype = _i32
    lib.trace_update_forward.argtypes = [_f32p, _f32p, _f32p, _f32p, _i64, _f32, _f32, _f32, _i32]
    lib.trace_update_backward.argtypes = [_f32p, _f32p, _f32p, _f32p, _i64, _f32, _f32, _i32]
    lib.trace_update_forward.restype = lib.trace_update_backward.restype = _i32
    lib.lif_static_rate_forward.restype = lib.lif_static_rate_backward.restype = _i32
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first call; ``None`` where it is unavailable."""
    global _lib, _tried
    if not _tried:
        with _lock:
            if not _tried:
                _lib = _build()
                _tried = True
    return _lib


def _slice_format(x: Tensor) -> torch.memory_format | None:
    """The memory format in which one time slice ``x`` is dense, or ``None``."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return None


def supports(current: Tensor) -> bool:
    """Whether the kernel takes ``current [T, ...]``: float32 on the CPU, each time slice dense,
    the slices one after another or one slice repeated (a time stride of 0)."""
    if current.dtype != torch.float32 or current.device.type != "cpu" or current.dim() < 2 or current.shape[0] < 1:
        return False
    if library() is None or _slice_format(current[0]) is None:
        return False
    return current.shape[0] == 1 or current.stride(0) in (0, current[0].numel())


def _empty(shape: torch.Size, fmt: torch.memory_format) -> Tensor:
    T, rest = shape[0], shape[1:]
    if fmt is torch.contiguous_format:
        return torch.empty(shape)
    return torch.empty((T * rest[0], *rest[1:]), memory_format=fmt).view(shape)


def _threads(n: int) -> int:
    env = os.environ.get("COMPENDIUM_NATIVE_THREADS")
    return max(1, min(int(env) if env else torch.get_num_threads(), 64))


def forward(current: Tensor, decay: float, threshold: float, reset: int) -> tuple[Tensor, Tensor]:
    """``(spikes, membranes)`` of the LIF over ``current`` (see :func:`supports`)."""
    T = current.shape[0]
    fmt = _slice_format(current[0])
    spikes, mems = _empty(current.shape, fmt), _empty(current.shape, fmt)
    n = current[0].numel()
    if n:
        library().lif_forward(current.data_ptr(), current.stride(0) if T > 1 else 0, mems.data_ptr(),
                              spikes.data_ptr(), n, T, decay, threshold, reset, _threads(n))
    return spikes, mems


def _like(g: Tensor | None, mems: Tensor) -> tuple[Tensor | None, int]:
    """``g`` in a layout the kernel reads alongside ``mems`` (copied if need be), and its time stride."""
    if g is None:
        return None, 0
    n = mems[0].numel()
    if g.dtype == mems.dtype and g.shape == mems.shape and g.stride()[1:] == mems.stride()[1:] and (
            g.shape[0] == 1 or g.stride(0) in (0, n)):
        return g, g.stride(0) if g.shape[0] > 1 else 0
    return torch.empty_like(mems).copy_(g), n


def backward(mems: Tensor, grad_spikes: Tensor | None, grad_mems: Tensor | None, decay: float, threshold: float,
             reset: int, detach_reset: bool, surrogate) -> Tensor:
    """The gradient w.r.t. the current, from the saved membranes (BPTT, see neuron.py): where the
    hard reset needs the spikes ``o[t]``, the kernel recomputes them from ``u[t]`` as the forward
    pass made them."""
    from compendium.spiking.surrogate import Rectangular

    T = mems.shape[0]
    n = mems[0].numel()
    grad = torch.empty_like(mems)
    if not n:
        return grad
    gs, s_gs = _like(grad_spikes, mems)
    gm, s_gm = _like(grad_mems, mems)
    h = None
    width = 1.0
    if type(surrogate) is Rectangular:
        width = surrogate.width
    else:  # the surrogate's derivative, step by step as the eager kernel computes it (a vectorised
        # transcendental may round differently in a tensor's tail, so the slices must be the same)
        h = torch.empty_like(mems)
        for t in range(T):
            surrogate.grad_(torch.sub(mems[t], threshold, out=h[t]))
    c = threshold if reset == 1 else decay * threshold
    library().lif_backward(mems.data_ptr(), gs.data_ptr() if gs is not None else None, s_gs,
                           gm.data_ptr() if gm is not None else None, s_gm, h.data_ptr() if h is not None else None,
                           grad.data_ptr(), n, T, decay, threshold, reset, int(detach_reset), width / 2,
                           1.0 / width, -decay, -c, _threads(n))
    return grad


def supports_pool(current: Tensor, surrogate) -> bool:
    """Whether :func:`pool_forward` takes ``current [T, N, C, H, W]``: what :func:`supports`
    asks, each slice dense channels-last (the kernel vectorises over the channels; an NCHW
    slice runs faster through the unfused layers), ``H`` and ``W`` even, the rectangular surrogate."""
    from compendium.spiking.surrogate import Rectangular

    if type(surrogate) is not Rectangular or current.dim() != 5 or not supports(current):
        return False
    H, W = current.shape[-2:]
    return H % 2 == 0 and W % 2 == 0 and current[0].is_contiguous(memory_format=torch.channels_last)


def pool_forward(current: Tensor, decay: float, threshold: float, reset: int) -> tuple[Tensor, Tensor]:
    """``(pooled spikes [T, N, C, H/2, W/2], membranes [T, N, C, H, W])``: the LIF over
    ``current`` followed by 2×2 max pooling of stride 2, without storing the spikes (see
    :func:`supports_pool`); both outputs keep the current's memory format."""
    T, N, C, H, W = current.shape
    fmt = _slice_format(current[0])
    mems, pooled = _empty(current.shape, fmt), _empty(torch.Size((T, N, C, H // 2, W // 2)), fmt)
    if current[0].numel():
        planes, H, W, cs = N, H, W, C  # channels-last: a plane per image, the channels innermost
        library().lif_pool_forward(current.data_ptr(), current.stride(0) if T > 1 else 0, mems.data_ptr(),
                                   pooled.data_ptr(), planes, H, W, cs, T, decay, threshold, reset,
                                   _threads(current[0].numel()))
    return pooled, mems


def pool_backward(mems: Tensor, grad_pooled: Tensor, decay: float, threshold: float, reset: int, detach_reset: bool,
                  surrogate) -> Tensor:
    """The gradient w.r.t. the current of :func:`pool_forward`, from the saved membranes."""
    T = mems.shape[0]
    grad = torch.empty_like(mems)
    if not mems[0].numel():
        return grad
    fmt = _slice_format(mems[0])
    if not (grad_pooled.dtype == torch.float32 and grad_pooled[0].is_contiguous(memory_format=fmt)
            and (T == 1 or grad_pooled.stride(0) in (0, mems[0].numel() // 4))):
        grad_pooled = _empty(grad_pooled.shape, fmt).copy_(grad_pooled)
    planes, cs, H, W = mems.shape[1:]
    c = threshold if reset == 1 else decay * threshold
    library().lif_pool_backward(mems.data_ptr(), grad_pooled.data_ptr(), grad_pooled.stride(0) if T > 1 else 0,
                                grad.data_ptr(), planes, H, W, cs, T, decay, threshold, reset, int(detach_reset),
                                surrogate.width / 2, 1.0 / surrogate.width, -decay, -c,
                                _threads(mems[0].numel()))
    return grad


RATE_MAX_T = 4096  # the rate backward keeps 2 T floats per element of a 256-element block, per thread


def supports_static_rate(current: Tensor, T: int, surrogate, bits: Tensor | None) -> bool:
    """Whether :func:`static_rate_forward` takes these arguments: a dense float32 CPU current,
    ``1 ≤ T ≤ RATE_MAX_T``, the rectangular surrogate, ``bits`` (if any) dense int16 ``[T, *current.shape]``."""
    from compendium.spiking.surrogate import Rectangular

    if current.dtype != torch.float32 or current.device.type != "cpu" or not current.is_contiguous():
        return False
    if type(surrogate) is not Rectangular or not 1 <= T <= RATE_MAX_T or library() is None:
        return False
    return bits is None or (bits.dtype == torch.int16 and bits.is_contiguous() and bits.device.type == "cpu"
                            and tuple(bits.shape) == (T, *current.shape))


def static_rate_forward(current: Tensor, T: int, decay: float, threshold: float, reset: int, bits: Tensor | None,
                        thr: int, scale: float) -> Tensor:
    """The rate ``Σ_t o_t m_t / T`` of a LIF driven by ``current`` at every one of ``T`` steps
    (see ``lif.c``; ``m_t = scale`` where ``bits[t] >= thr``, else 0; ``m ≡ 1`` without bits)."""
    out = torch.empty_like(current)
    n = current.numel()
    if n:
        library().lif_static_rate_forward(current.data_ptr(), bits.data_ptr() if bits is not None else None, thr,
                                          scale, out.data_ptr(), n, T, decay, threshold, reset, _threads(n))
    return out


def static_rate_backward(current: Tensor, T: int, grad_rate: Tensor, decay: float, threshold: float, reset: int,
                         detach_reset: bool, surrogate, bits: Tensor | None, thr: int, scale: float) -> Tensor:
    """The gradient w.r.t. ``current`` of :func:`static_rate_forward`, by BPTT over the recomputed steps."""
    grad_rate = grad_rate.contiguous()
    grad = torch.empty_like(current)
    n = current.numel()
    if n:
        c = threshold if reset == 1 else decay * threshold
        lib, threads = library(), _threads(n)
        scratch = torch.empty(int(lib.rate_scratch_floats(T, threads)))
        lib.lif_static_rate_backward(current.data_ptr(), bits.data_ptr() if bits is not None else None, thr, scale,
                                     grad_rate.data_ptr(), grad.data_ptr(), n, T, decay, threshold, reset,
                                     int(detach_reset), surrogate.width / 2, 1.0 / surrogate.width, -decay, -c,
                                     scratch.data_ptr(), threads)
    return grad


def supports_trace_update(*tensors: Tensor) -> bool:
    """Whether :func:`trace_update_forward` takes these tensors: float32, dense, on the CPU, one shape."""
    first = tensors[0]
    return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() and t.shape == first.shape
               for t in tensors) and library() is not None


def trace_update_forward(trace: Tensor, hebb: Tensor, decay: float, batch: int, clip: float) -> tuple[Tensor, Tensor]:
    """``(clamp(decay · trace + hebb / batch, -clip, clip), keep)`` in one pass, bit for bit the
    eager operations (``lif.c``); ``keep`` (uint8) marks where the clamp passes the gradient."""
    out = torch.empty_like(trace)
    keep = torch.empty(trace.shape, dtype=torch.uint8)
    n = trace.numel()
    if n:
        library().trace_update_forward(trace.data_ptr(), hebb.data_ptr(), out.data_ptr(), keep.data_ptr(), n, decay,
                                       float(batch), clip, _threads(n))
    return out, keep


def trace_update_backward(grad: Tensor, keep: Tensor, decay: float, batch: int, need_trace: bool,
                          need_hebb: bool) -> tuple[Tensor | None, Tensor | None]:
    """The gradients w.r.t. ``trace`` and ``hebb`` of :func:`trace_update_forward` (``None`` where
    not needed): ``g · keep · decay`` and ``g · keep / batch``, as PyTorch's clamp, mul and div
    backward compute them."""
    grad = grad.contiguous()
    g_trace = torch.empty_like(grad) if need_trace else None
    g_hebb = torch.empty_like(grad) if need_hebb else None
    n = grad.numel()
    if n and (need_trace or need_hebb):
        library().trace_update_backward(grad.data_ptr(), keep.data_ptr(),
                                        g_trace.data_ptr() if g_trace is not None else None,
                                        g_hebb.data_ptr() if g_hebb is not None else None, n, decay, float(batch),
                                        _threads(n))
    return g_trace, g_hebb


_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 words (``>>`` on int64 is arithmetic: mask the sign's copies)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def random_words(m: int, key: int, device: torch.device | str = "cpu") -> Tensor:
    """``m`` random 64-bit words (int64 ``[m]``) determined by ``key``: word ``i`` is the
    SplitMix64 output (Steele, Lea & Flood, OOPSLA 2014) of the state ``key + (i + 1) γ``,
    ``γ = 0x9E3779B97F4A7C15``::

        z ← (z ⊕ (z ≫ 30)) · 0xBF58476D1CE4E5B9;  z ← (z ⊕ (z ≫ 27)) · 0x94D049BB133111EB;  z ⊕ (z ≫ 31)

    (arithmetic mod 2⁶⁴). Counter-based, so the compiled kernel fills the words on every core;
    on another device or without the library the same words come from tensor operations
    (int64 products wrap mod 2⁶⁴ on every PyTorch backend), bit for bit."""
    device = torch.device(device)
    key = _signed(int(key) % (1 << 64))
    if device.type == "cpu" and library() is not None:
        out = torch.empty(m, dtype=torch.int64)
        if m:
            library().random_words(out.data_ptr(), m, key % (1 << 64), _threads(m))
        return out
    z = torch.arange(1, m + 1, dtype=torch.int64, device=device).mul_(_signed(_GAMMA)).add_(key)
    z = (z ^ _shr(z, 30)).mul_(_signed(_MIX1))
    z = (z ^ _shr(z, 27)).mul_(_signed(_MIX2))
    return z ^ _shr(z, 31)
