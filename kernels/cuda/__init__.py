"""CUDA kernels (``@cuda.jit``): the GPU twins of ``numbanet.kernels.cpu``.

Each module here has the same file name, public function names and argument order as its CPU
counterpart (see kernels/__init__.py for the conventions). A public function is a host-side
*launcher*: it takes numba device arrays (anything with ``__cuda_array_interface__``) and the
scalar hyperparameters, picks grid and block sizes and launches one (rarely two) private kernels.
Launchers never synchronize and never copy data to the host.

Shared machinery (private modules):

* ``_common``: launch knobs (``config``: threads per block, grid cap, GEMM tile, SM count; tests
  shrink them so tiny arrays still span several blocks), the :class:`~._common.Kernel` registry
  (every kernel with its argument spec, so ``numbanet._cuda.compile_ptx`` can compile all of them
  for float32/float64 and int32/int64 labels without a GPU), deterministic block/grid/row
  reductions, device scratch buffers, and the fill / Philox uniform and normal kernels of the backend.
* ``_gemm``: the tiled GEMM (shared-memory tiles, register blocking, split-K) that dense
  layers and convolutions (implicit GEMM) instantiate through index functions, and beside it
  ``gemm_plain``, the textbook one-output-per-thread version it is explained and tested against.

Element types: most kernels are lazily typed dispatchers, compiled by numba per argument types.
The GEMM tiles need their element type at compile time (shared and local arrays), so each GEMM
variant is built per dtype by a cached factory that freezes ``numba.from_dtype(dtype)`` into the
kernel's closure.

Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same code runs on the CPU, slowly; the
tests use it with shrunken launch knobs.
"""
