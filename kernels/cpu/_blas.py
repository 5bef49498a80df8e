"""BLAS GEMM with transposes and ``beta`` from inside ``@njit``.

Numba's ``np.dot`` calls SciPy's BLAS with ``beta = 0`` on contiguous operands only. Kernels that
add a product into an existing buffer (weight gradients of a layer called several times, batched
matmuls into strided outputs) call SciPy's ``sgemm``/``dgemm`` directly through the addresses
``scipy.linalg.cython_blas`` exports: the same library ``np.dot`` uses, so the backend's BLAS
thread limit applies to it too.

``gemm(ta, tb, m, n, k, alpha, a, a0, lda, b, b0, ldb, beta, c, c0, ldc)`` computes, for
row-major matrices stored in the flat arrays ``a``, ``b`` and ``c`` from element offsets ``a0``,
``b0`` and ``c0`` with row strides ``lda``, ``ldb`` and ``ldc`` (in elements):

    C (m x n) = alpha * op(A) @ op(B) + beta * C

where op(A) is A (m x k, stored m rows of lda) or, with ``ta``, A.T (A stored k rows of lda);
likewise op(B) (k x n, or stored n rows of ldb with ``tb``). With ``beta == 0`` C is not read
(BLAS semantics: NaN in an uninitialized C does not propagate). All three arrays have one float
dtype (float32 or float64).
"""
import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

from ._jit import HELPER

# Bound by symbol name (not as ctypes pointers, which Numba cannot cache): registered with
# LLVM at import, before any cached kernel that calls them is loaded.
for _name in ("sgemm", "dgemm"):
    llvm.add_symbol(f"numbanet_{_name}",
                    get_cython_function_address("scipy.linalg.cython_blas", _name))
_SIG = types.void(*([types.voidptr] * 13))
_sgemm = types.ExternalFunction("numbanet_sgemm", _SIG)
_dgemm = types.ExternalFunction("numbanet_dgemm", _SIG)

_N, _T = ord("N"), ord("T")

# Arguments for gemm's flags and zero offsets: a Python literal (False, 0) in a call from compiled
# code makes Numba compile gemm once more for each combination of literal values, these numpy
# scalars type as plain bool / int64, so every caller shares one specialization per dtype.
NO_TRANS, TRANS = np.bool_(False), np.bool_(True)
AT0 = np.int64(0)


@njit(**HELPER)
def gemm(ta, tb, m, n, k, alpha, a, a0, lda, b, b0, ldb, beta, c, c0, ldc):
    """C = alpha op(A) op(B) + beta C on row-major flat storage (see the module docstring)."""
    if m == 0 or n == 0:
        return
    if k == 0:                        # BLAS would scale C by beta; do the same without it
        for i in range(m):
            for j in range(n):
                c[c0 + i * ldc + j] = 0.0 if beta == 0.0 else beta * c[c0 + i * ldc + j]
        return
    # Row-major C = op(A) op(B) is column-major C.T = op(B).T op(A).T: call BLAS with the
    # operands swapped; a row-major matrix of row stride ld is a column-major one with that ld.
    flags = np.empty(2, np.uint8)
    flags[0] = _T if tb else _N
    flags[1] = _T if ta else _N
    dims = np.empty(6, np.int32)
    dims[0], dims[1], dims[2] = n, m, k
    dims[3], dims[4], dims[5] = max(ldb, 1), max(lda, 1), max(ldc, 1)
    scal = np.empty(2, c.dtype)
    scal[0], scal[1] = alpha, beta
    pa, pb, pc = a[a0:], b[b0:], c[c0:]
    if c.itemsize == 4:
        _sgemm(flags[0:].ctypes.data, flags[1:].ctypes.data, dims[0:].ctypes.data, dims[1:].ctypes.data,
               dims[2:].ctypes.data, scal[0:].ctypes.data, pb.ctypes.data, dims[3:].ctypes.data, pa.ctypes.data,
               dims[4:].ctypes.data, scal[1:].ctypes.data, pc.ctypes.data, dims[5:].ctypes.data)
    else:
        _dgemm(flags[0:].ctypes.data, flags[1:].ctypes.data, dims[0:].ctypes.data, dims[1:].ctypes.data,
               dims[2:].ctypes.data, scal[0:].ctypes.data, pb.ctypes.data, dims[3:].ctypes.data, pa.ctypes.data,
               dims[4:].ctypes.data, scal[1:].ctypes.data, pc.ctypes.data, dims[5:].ctypes.data)


@njit(**HELPER)
def gemm2d(ta, tb, alpha, a, b, beta, c):
    """c = alpha op(a) @ op(b) + beta c for C-contiguous 2-D arrays (op: transpose when set)."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    gemm(ta, tb, m, n, k, alpha, a.reshape(-1), AT0, a.shape[1], b.reshape(-1), AT0, b.shape[1],
         beta, c.reshape(-1), AT0, n)
