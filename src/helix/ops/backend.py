"""One backend resolver for every op (selective scan, causal conv, the fused BiMamba inner function).

Backends:

- ``"auto"``: the Triton kernels for CUDA tensors when Triton imports; the numba kernels for CPU
  tensors when numba imports (float64 excepted: gradcheck and references keep the exact reference);
  else the reference;
- ``"reference"``: the pure-PyTorch specification (any device; the CPU path);
- ``"triton"``: the Triton kernels, which need CUDA tensors (or CPU tensors with ``TRITON_INTERPRET=1``,
  Triton's interpreter, for tests); a clear error otherwise;
- ``"cpu"``: the numba kernels (``pip install helix-audio[cpu]``), which need CPU tensors; they
  compute in fp32 whatever the input dtype;
- ``"export"``: the reference maths as loops that tracing and ONNX export can follow (the scan only;
  ops without a loop fall back to their reference, which exports as is).

Triton is optional: kernel modules are imported on first use, so CPU installs without Triton import
helix fine, and tests can set ``TRITON_INTERPRET`` before ``@triton.jit`` runs.
"""

from __future__ import annotations

import importlib
import math
import os

import torch

BACKENDS = ("auto", "reference", "triton", "export", "cpu")
_loaded: dict[str, object] = {}
_errors: dict[str, Exception] = {}
_numba_ok: bool | None = None  # whether numba imports; None until first asked


def check_backend(backend: str) -> str:
    """``backend`` itself, or ValueError naming the allowed values."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def load_kernels(module: str, required: bool = True):
    """Import ``helix.ops.<module>`` (a Triton kernel module) once; None if it cannot be imported and
    not ``required``, else RuntimeError saying how to install Triton."""
    if module not in _loaded and module not in _errors:
        try:
            _loaded[module] = importlib.import_module(f"helix.ops.{module}")
        except ImportError as err:  # triton missing or too old
            _errors[module] = err
    if module not in _loaded and required:
        raise RuntimeError(
            f"the Triton kernels ({module}) were requested but cannot be imported ({_errors[module]}); "
            "install Triton with `pip install helix-audio[gpu]` or use backend='reference'"
        )
    return _loaded.get(module)


def triton_available() -> bool:
    """True when Triton imports (the kernels can run on CUDA); says nothing about a GPU."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_kernels_available() -> bool:
    """True when numba imports, so the compiled CPU kernels can run (checked once per process)."""
    global _numba_ok
    if _numba_ok is None:
        try:
            import numba  # noqa: F401
        except ImportError:
            _numba_ok = False
        else:
            _numba_ok = True
    return _numba_ok


def preload_cpu_kernels(backend: str) -> None:
    """Import the numba kernel modules now if ``backend`` may pick them for CPU tensors.

    Their first import compiles (or loads cached) machine code, and numba then registers typing for
    ``math`` functions, which fails inside ``torch.export``'s non-strict trace: the trace swaps those
    builtins for its own. Layers call this when they are built, so a model whose first call is an
    export traces; the cost is paid once per process, as the first CPU forward would pay it.
    """
    if backend in ("auto", "cpu") and cpu_kernels_available():
        for module in ("selective_scan.cpu", "causal_conv.cpu"):
            importlib.import_module(f"helix.ops.{module}")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype products run in for ``x``: the autocast dtype when autocast is on for x's device, else
    x's own dtype."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


EAGER_MIN_ROWS = 32_768
"""Rows below which the row-wise kernels (LayerNorm, the residual add) leave the work to PyTorch: an eager
launch of their Triton path costs ~0.05 ms of host time (``benchmarks/bench_layer_norm.py`` at 16,000 rows:
0.089 against 0.039 ms), which short steps would pay per call."""


def eager_row_kernel_applies(x: torch.Tensor) -> bool:
    """Whether a row-wise Triton kernel should run eagerly on x (..., D): a CUDA tensor of at least
    :data:`EAGER_MIN_ROWS` rows, Triton importable, and no compiler or tracer recording (they see the
    reference)."""
    return (x.is_cuda and x.dim() >= 1 and math.prod(x.shape[:-1]) >= EAGER_MIN_ROWS and triton_available()
            and not through_custom_op() and not torch.jit.is_tracing())


def row_tile(D: int, tile: int) -> tuple[int, int]:
    """A row-wise kernel's tile for rows of D elements: (rows per program step, D padded to a power of two,
    at least 16), the rows filling ``tile`` elements (the LayerNorm and residual kernels)."""
    block_d = max(1 << (D - 1).bit_length(), 16)
    return max(tile // block_d, 1), block_d


def partial_sum_grid(M: int, rows: int, max_programs: int) -> tuple[int, int]:
    """(row blocks per program, programs) for a backward that walks M rows in blocks of ``rows`` and keeps one
    row of per-column partial sums per program, at most ``max_programs`` of them; every program has at
    least one block."""
    blocks = -(-M // rows)
    per_program = -(-blocks // min(blocks, max_programs))
    return per_program, -(-blocks // per_program)


def through_custom_op() -> bool:
    """Whether the kernels are called through their ``torch.library`` custom ops (``ops/*/library.py``).

    True while ``torch.compile`` or ``torch.export`` traces, which then see one opaque op per kernel
    call (with a fake implementation) instead of tracing into its launcher. Eagerly the kernels'
    autograd functions are called directly: the op dispatch costs ~80 us per call (forward and
    backward, measured on CPU), which a launch-bound GPU step would pay per layer.
    """
    return torch.compiler.is_compiling()


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """The concrete backend for ``tensor``: ``"triton"``, ``"cpu"``, ``"reference"`` or ``"export"``.

    Raises ValueError for an unknown name and RuntimeError when ``"triton"`` cannot run here.
    """
    check_backend(backend)
    if backend == "auto":
        if tensor.is_cuda:
            return "triton" if triton_available() else "reference"
        if tensor.device.type == "cpu" and tensor.dtype != torch.float64 and cpu_kernels_available():
            return "cpu"
        return "reference"
    if backend == "cpu":
        if not cpu_kernels_available():
            raise RuntimeError("backend='cpu' was requested but numba cannot be imported; install it with "
                               "`pip install helix-audio[cpu]` or use backend='reference'")
        if tensor.device.type != "cpu":
            raise RuntimeError(f"backend='cpu' needs CPU tensors, got tensors on {tensor.device}")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' was requested but Triton cannot be imported; install it with "
                               "`pip install helix-audio[gpu]` or use backend='reference'")
        if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests); "
                               f"got tensors on {tensor.device}")
    return backend
