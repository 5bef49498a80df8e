"""Dense (fully connected) layer kernels: BLAS GEMM through ``np.dot`` inside ``@njit``.

Large products are split into blocks of output rows, one single-threaded BLAS call per block,
the blocks run on Numba's threads (``prange``; the backend runs BLAS single-threaded, see
``numbanet.backend``). Each block loop is compiled twice, serially and with ``parallel=True``
(``_threads.split_parallel``), each copy at its first use, so a model whose products stay small
never compiles the parfor copy. (Python helper threads, as the convolutions use, cost ~100 us of
hand-off per call here: a quarter of a 128x784->256 product.) The number of blocks depends on the shape only, never on the thread
count, so results are the same on any machine.

The weight gradient calls BLAS through ``_blas.gemm`` (x read transposed in place, no copy) so
that ``accumulate`` adds into the existing gradient (beta = 1) in the same pass: a layer called
several times in one step sums its calls' gradients.
"""
import numpy as np
from numba import njit, prange

from ._blas import AT0, NO_TRANS, TRANS, gemm
from ._threads import split_parallel
from .activations import _fused_forward_kernel

# Multiply-adds below which one BLAS call on the calling thread is faster than a split.
_PARALLEL_MIN_WORK = 1 << 21
# Row blocks of a split product: a power of two (2 or 4 threads split them evenly), at most
# _ROW_BLOCKS, each of at least _MIN_BLOCK_ROWS rows (thinner GEMMs lose more BLAS efficiency
# than the threads gain), and no more than one per _GOOD_BLOCK_ROWS rows beyond the first two:
# every BLAS call packs the whole shared operand again, so a 1024x1024x1024 product in 8 blocks
# took 33 ms on one thread against 27 in 4 and 24 in one.
_ROW_BLOCKS = 8
_MIN_BLOCK_ROWS = 64
_GOOD_BLOCK_ROWS = 256


def _split(kernel, nb):
    """The copy of a split_parallel kernel for nb blocks: the prange copy only for nb > 1 (a
    Numba prange runs blocks on its threads with a few us of hand-off; a model whose products
    stay small never compiles it)."""
    return kernel.parallel if nb > 1 else kernel.serial


def _blocks(rows, work):
    """How many row blocks (1: no split)."""
    if work < _PARALLEL_MIN_WORK:
        return 1
    nb = max(1, min(_ROW_BLOCKS, rows // _MIN_BLOCK_ROWS, max(2, rows // _GOOD_BLOCK_ROWS)))
    return 1 << (nb.bit_length() - 1)


def _forward_blocks(x, w, b, out, nb):
    """The nb row blocks of out = x @ w + b."""
    n, u = out.shape
    for t in prange(nb):
        r0, r1 = t * n // nb, (t + 1) * n // nb
        np.dot(x[r0:r1], w, out[r0:r1])
        for i in range(r0, r1):
            for j in range(u):
                out[i, j] += b[j]


_forward_blocks = split_parallel(_forward_blocks, "_forward_blocks", 0, 0)


def dense_forward(x, w, b, out):
    """out = x @ w + b  (x (N, I), w (I, U), b (U,), out (N, U))."""
    n, u = out.shape
    nb = _blocks(n, n * u * x.shape[1])
    _split(_forward_blocks, nb)(x, w, b, out, nb)


def dense_forward_activation(x, w, b, activation, alpha, pre, out):
    """pre = x @ w + b and out = its activation (``activation``: a code of kernels/scalar.py
    ACTIVATION_CODES, ``alpha`` its parameter); the CUDA twin does both in one launch."""
    activate = _fused_forward_kernel(activation, pre, out)
    dense_forward(x, w, b, pre)
    activate(pre.reshape(-1), alpha, out.reshape(-1))


def _input_blocks(grad_out, w, grad_in, nb):
    """The nb row blocks of grad_in = grad_out @ w.T."""
    n = grad_in.shape[0]
    for t in prange(nb):
        r0, r1 = t * n // nb, (t + 1) * n // nb
        np.dot(grad_out[r0:r1], w.T, grad_in[r0:r1])


_input_blocks = split_parallel(_input_blocks, "_input_blocks", 0, 0)


def dense_backward_input(grad_out, w, grad_in):
    """grad_in = grad_out @ w.T."""
    n, i = grad_in.shape
    nb = _blocks(n, n * i * w.shape[1])
    _split(_input_blocks, nb)(grad_out, w, grad_in, nb)


@njit(cache=True)
def _weight_rows(x, grad_out, beta, grad_w, c0, c1):
    """grad_w[c0:c1] = x[:, c0:c1].T @ grad_out + beta * grad_w[c0:c1] (one BLAS call)."""
    n, i = x.shape
    u = grad_out.shape[1]
    gemm(TRANS, NO_TRANS, c1 - c0, u, n, 1.0, x.reshape(-1), c0, i, grad_out.reshape(-1), AT0, u,
         beta, grad_w.reshape(-1), c0 * u, u)


@njit(cache=True, parallel=True)
def _weight_blocks(x, grad_out, beta, grad_w, nb):
    """_weight_rows by nb blocks of grad_w's rows, in parallel (the recurrent layers' weight
    gradients, kernels/cpu/rnn.py)."""
    i = x.shape[1]
    for t in prange(nb):
        _weight_rows(x, grad_out, beta, grad_w, t * i // nb, (t + 1) * i // nb)


def _weight_worker(x, grad_out, accumulate, grad_w, grad_b, nb):
    """The nb blocks of grad_w's rows, grad_w[c0:c1] = x[:, c0:c1].T @ grad_out (+ grad_w[c0:c1]
    with ``accumulate``), one BLAS call each; then grad_b (column sums of grad_out)."""
    n, i = x.shape
    u = grad_out.shape[1]
    beta = 1.0 if accumulate else 0.0
    for t in prange(nb):
        _weight_rows(x, grad_out, beta, grad_w, t * i // nb, (t + 1) * i // nb)
    s = np.zeros(u, grad_b.dtype)
    for r in range(n):
        for j in range(u):
            s[j] += grad_out[r, j]
    for j in range(u):
        grad_b[j] = grad_b[j] + s[j] if accumulate else s[j]


_weight_worker = split_parallel(_weight_worker, "_weight_worker", 0, 0)


def dense_backward_weight(x, grad_out, accumulate, grad_w, grad_b):
    """grad_w = x.T @ grad_out; grad_b = column sums of grad_out. With ``accumulate`` both are
    added into the existing gradients instead (BLAS beta = 1: no extra pass)."""
    n, u = grad_out.shape
    i = x.shape[1]
    nb = _blocks(i, n * u * i)
    _split(_weight_worker, nb)(x, grad_out, bool(accumulate), grad_w, grad_b, nb)
