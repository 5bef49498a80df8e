"""Dense (fully connected) layer kernels: BLAS GEMM through ``np.dot`` inside ``@njit``."""
import numpy as np
from numba import njit


@njit(cache=True)
def dense_forward(x, w, b, out):
    """out = x @ w + b  (x (N, I), w (I, U), b (U,), out (N, U))."""
    np.dot(x, w, out)
    n, u = out.shape
    for i in range(n):
        for j in range(u):
            out[i, j] += b[j]


@njit(cache=True)
def dense_backward_input(grad_out, w, grad_in):
    """grad_in = grad_out @ w.T."""
    np.dot(grad_out, w.T, grad_in)


@njit(cache=True)
def dense_backward_weight(x, grad_out, grad_w, grad_b):
    """grad_w = x.T @ grad_out; grad_b = column sums of grad_out."""
    np.dot(x.T, grad_out, grad_w)
    n, u = grad_out.shape
    for j in range(u):
        grad_b[j] = 0.0
    for i in range(n):
        for j in range(u):
            grad_b[j] += grad_out[i, j]
