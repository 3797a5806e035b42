"""CPU emulation of cvflow's CUDA kernels: the same ``kernels/*.cu`` built by g++ (tests only).

Each ``kernels/NAME.cu`` is compiled with ``kernels/emu.h`` (CUDA qualifiers mapped away,
thread-local ``threadIdx``/``blockIdx``) into ``NAME-<hash>.so``, together with one
generated C launcher per ``extern "C" __global__`` kernel that loops over the grid and
the block and calls the kernel once per CUDA thread. Launches go through ctypes with
NumPy buffers. The arguments are checked against the kernel's C signature (pointer
element type, C-contiguity, scalar type), so a launch that would be wrong on a GPU
fails here.

Grids of at least 65,536 CUDA threads run as runs of whole blocks on
``$CVFLOW_EMU_THREADS`` OS threads (default: the CPU count, at most 8): exact for kernels
whose blocks share nothing and whose threads write their own elements, as every
cvflow kernel does.

The compiler is ``$CXX`` (default g++). Builds are cached in ``$CVFLOW_EMU_CACHE``
(default: ``<tmp>/cvflow-emu-<uid>``), keyed by a hash of the sources, the generated
launchers, the compiler and its flags; a library is written under a temporary name and
renamed, so concurrent builds are safe.
``CVFLOW_EMU_SANITIZE=address`` adds AddressSanitizer (see bench/asan_kernels.sh).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from cvflow.backends.cuda.rounding import emulated_matmul
from cvflow.errors import DeviceError

_FLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-fno-fast-math", "-ffp-contract=off")
# OS threads per launch of at least _PARALLEL_FROM CUDA threads (runs of whole blocks).
_THREADS = max(1, int(os.environ.get("CVFLOW_EMU_THREADS", min(8, os.cpu_count() or 1))))
_PARALLEL_FROM = 1 << 16
_SANITIZE = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\([^)]*\)\s*)?void\s+(\w+)\s*\(([^)]*)\)')
# C parameter type (qualifiers and __restrict__ removed) -> NumPy dtype of the argument
_POINTEE = {"float": np.float32, "int": np.int32, "double": np.float64, "unsigned char": np.uint8,
            # kernels/dtype.h's half storage: binary16, and bfloat16 as its uint16 bit patterns
            "cvf_f16": np.float16, "cvf_bf16": np.uint16}
_SCALAR = {"float": (np.float32, ctypes.c_float), "int": (np.int32, ctypes.c_int32),
           "double": (np.float64, ctypes.c_double)}


def kernel_dir() -> Path:
    """The directory holding the ``.cu`` sources: ``cvflow/kernels`` when installed, else
    ``kernels/`` at the repository root."""
    pkg = Path(__file__).resolve().parents[2]
    for d in (pkg / "kernels", pkg.parent / "kernels"):
        if (d / "emu.h").is_file():
            return d
    raise DeviceError(f"cvflow's CUDA kernel sources were not found next to {pkg}")


def kernel_source(stem: str) -> str:
    """The text a device compiles for ``kernels/<stem>.cu``: ``kernels/dtype.h`` (the half
    storage types and conversions), then the source. NVRTC has no include path, so the
    header is a prelude rather than an #include."""
    d = kernel_dir()
    return (d / "dtype.h").read_text() + "\n" + (d / f"{stem}.cu").read_text()


def parse_kernels(source: str) -> dict:
    """``{name: [(ctype, is_pointer), ...]}`` for every ``extern "C" __global__`` kernel."""
    kernels = {}
    for name, params in _KERNEL.findall(source):
        sig = []
        for param in filter(None, (p.strip() for p in params.split(","))):
            text = param.replace("__restrict__", " ").replace("const", " ").replace("*", " * ")
            words = text.split()
            pointer = "*" in words
            base = " ".join(w for w in words[:-1] if w != "*")
            sig.append((base, pointer))
        kernels[name] = sig
    return kernels


def _launcher(name, sig):
    """C source of the launcher that runs kernel `name` over a grid (emu.h's cvf_run)."""
    decls, names = [], []
    for i, (base, pointer) in enumerate(sig):
        t = f"{base}*" if pointer else base
        decls.append(f"    {t} a{i} = *({t}*)args[{i}];")
        names.append(f"a{i}")
    return "\n".join([
        f'extern "C" void cvf_launch_{name}(const unsigned* d, void** args, int nthreads) {{',
        *decls,
        f"    cvf_run(d, nthreads, [&] {{ {name}({', '.join(names)}); }});",
        "}",
    ])


def _cache_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"cvflow-emu-{os.getuid() if hasattr(os, 'getuid') else 0}"
    d = Path(os.environ.get("CVFLOW_EMU_CACHE", default))
    d.mkdir(parents=True, exist_ok=True)
    return d


def build(stem: str) -> tuple[Path, dict]:
    """Build (or find in the cache) the emulator library of ``kernels/<stem>.cu``.
    Returns the library's path and its kernels' signatures."""
    src_dir = kernel_dir()
    cu = src_dir / f"{stem}.cu"
    if not cu.is_file():
        raise DeviceError(f"no kernel source {cu.name} in {src_dir}")
    source = cu.read_text()
    kernels = parse_kernels(source)
    if not kernels:
        raise DeviceError(f'{cu.name} defines no extern "C" __global__ kernel')
    unit = "\n".join([f'#include "{src_dir / "emu.h"}"', f'#include "{src_dir / "dtype.h"}"', f'#include "{cu}"',
                      *(_launcher(k, sig) for k, sig in kernels.items())]) + "\n"
    flags = _FLAGS + (_SANITIZE if os.environ.get("CVFLOW_EMU_SANITIZE") == "address" else ())
    cxx = os.environ.get("CXX", "g++")
    headers = [(src_dir / h).read_text() for h in ("emu.h", "dtype.h")]
    key = hashlib.sha256("\0".join([source, *headers, unit, cxx, *flags]).encode()).hexdigest()
    lib = _cache_dir() / f"{stem}-{key[:16]}.so"
    if not lib.is_file():
        fd, tmp = tempfile.mkstemp(suffix=".so", prefix=f".{stem}-", dir=lib.parent)
        os.close(fd)
        cpp = tmp[:-3] + ".cpp"
        try:
            Path(cpp).write_text(unit)
            try:
                res = subprocess.run([cxx, *flags, cpp, "-o", tmp], capture_output=True, text=True)
            except FileNotFoundError:
                raise DeviceError("the CUDA emulator builds kernels with g++ (C++20); none was found "
                                  "(set CXX to a C++ compiler)") from None
            if res.returncode:
                raise DeviceError(f"emulator build of {cu.name} failed:\n{res.stderr[-4000:]}")
            os.replace(tmp, lib)  # atomic: a concurrent build of the same key writes the same bytes
        finally:
            for f in (tmp, cpp):
                if os.path.exists(f):
                    os.unlink(f)
    return lib, kernels


class Library:
    """One built ``.cu``: its ctypes handle and its kernels' signatures."""

    def __init__(self, stem):
        path, self.kernels = build(stem)
        self.stem = stem
        self.dll = ctypes.CDLL(str(path))
        self.funcs = {}

    def launch(self, name, grid, block, args, dry=False):
        """Run kernel `name` over `grid` x `block`; dry: check the arguments only."""
        sig = self.kernels.get(name)
        if sig is None:
            raise DeviceError(f"{self.stem}.cu has no kernel {name!r} (it has {', '.join(self.kernels)})")
        if len(args) != len(sig):
            raise DeviceError(f"{self.stem}:{name} takes {len(sig)} arguments, got {len(args)}")
        holders = [_argument(f"{self.stem}:{name} argument {i}", a, t) for i, (a, t) in enumerate(zip(args, sig))]
        ptrs = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        dims = (ctypes.c_uint * 6)(*_dims(grid), *_dims(block))
        fn = self.funcs.get(name)
        if fn is None:
            fn = self.funcs[name] = getattr(self.dll, f"cvf_launch_{name}")
            fn.argtypes, fn.restype = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int), None
        if dry:
            return
        threads = int(np.prod(dims, dtype=np.int64))
        fn(dims, ptrs, _THREADS if threads >= _PARALLEL_FROM else 1)  # ctypes releases the GIL


def _dims(d):
    d = tuple(int(v) for v in (d if isinstance(d, (tuple, list)) else (d,)))
    if not 1 <= len(d) <= 3 or min(d) < 1:
        raise DeviceError(f"launch dimensions must be 1 to 3 positive ints, got {d}")
    return d + (1,) * (3 - len(d))


def _argument(what, value, ctype):
    """A ctypes object holding `value`, checked against the kernel's parameter type."""
    base, pointer = ctype
    if pointer:
        want = _POINTEE.get(base)
        if not isinstance(value, np.ndarray) or want is None or value.dtype != want:
            raise DeviceError(f"{what} must be a {base} array, got {type(value).__name__} "
                              f"{getattr(value, 'dtype', '')}")
        if not value.flags.c_contiguous:
            raise DeviceError(f"{what} must be C-contiguous")
        return ctypes.c_void_p(value.ctypes.data)
    want, ctor = _SCALAR.get(base, (None, None))
    if want is None or type(value) is not want:
        raise DeviceError(f"{what} must be a NumPy {base} scalar ({want and want.__name__}), "
                          f"got {type(value).__name__}")
    return ctor(value)


_LIBS: dict = {}
_LOCK = threading.Lock()


def library(stem) -> Library:
    """The emulator library of ``kernels/<stem>.cu``, built on first use (once per process)."""
    with _LOCK:
        lib = _LIBS.get(stem)
        if lib is None:
            lib = _LIBS[stem] = Library(stem)
        return lib


class EmulatorGraph:
    """A captured sequence of executor calls (the emulator's CUDA graph); `replay` runs them
    in order on the buffers they were captured with."""

    def __init__(self, ex, calls, pool):
        self.ex, self.calls, self.pool = ex, tuple(calls), pool

    @property
    def nodes(self) -> int:
        return len(self.calls)

    def replay(self):
        self.pool.replayed = True
        dry = self.ex.tracer.dry
        for call in self.calls:
            if call[0] == "launch":
                _, kernel, grid, block, args = call
                stem, _, func = kernel.partition(":")
                library(stem).launch(func, grid, block, args, dry=dry)
            elif not dry:
                _, a, b, out, math = call
                emulated_matmul(a.view(np.ndarray), b.view(np.ndarray), out.view(np.ndarray), math)
