"""``njit`` options shared by the CPU kernel modules."""

# A compiled helper that only other compiled functions call: no wrapper to call it from Python
# (cpython) or through a first-class function pointer (cfunc). Numba generates both for every
# function by default, and every caller that links a helper in optimizes and emits them again:
# about a tenth of the compile time of the convolution kernels. Calling such a helper from Python
# fails; give it plain ``cache=True`` if it must be callable from there.
HELPER = dict(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
