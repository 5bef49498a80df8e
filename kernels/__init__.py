"""numbanet kernels: every hot loop of the framework, and nothing else.

``cpu/`` holds ``@njit`` kernels, ``cuda/`` their ``@cuda.jit`` twins under the same file and
function names with the same argument order, and ``scalar.py`` the plain-Python scalar maths that
both targets compile (``njit(inline="always")`` on the CPU, ``cuda.jit(device=True)`` on the GPU).

Conventions (the whole tree keeps them):

* Outputs come **last**. A kernel writes into the output arrays it is given and returns ``None``;
  it never allocates its results (a CPU kernel may allocate scratch space, a CUDA kernel never
  does; its host-side launcher may allocate device scratch).
* Arrays are C-contiguous, float32 or float64 (one dtype per call); integer labels and indices are
  int32 or int64. Hyperparameters are Python scalars placed before the outputs.
* Elementwise kernels work on flat 1-D arrays (a layer passes ``x.reshape(-1)``); their outputs may
  alias their inputs (in-place use is allowed).
* Losses reduce to the batch mean: ``<loss>_forward(..., out)`` writes the mean loss into
  ``out[0]`` (``out`` has shape ``(1,)``), ``<loss>_backward(..., grad)`` writes
  d(mean loss)/d(y_pred).
* Optimizer updates work in place on flat 1-D buffers: one call updates every parameter of a model.
* ``pad_h``/``pad_w`` are the padding at the top/left; the bottom/right padding follows from the
  output shape (input positions outside the image read as zero, or as -inf for max pooling).

Names are ``<op>_<pass>``; the CUDA module of an op exports a launcher of the same name and
signature, so ``numbanet compare`` can pair them by name.
"""
