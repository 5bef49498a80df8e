"""Padding ragged sequences into one array (keras.utils.pad_sequences)."""
import numbers

import numpy as np


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0):
    """Pad (and truncate) a list of sequences to one length, as ``keras.utils.pad_sequences``.

    Args:
        sequences: a sized iterable of sequences (lists or arrays) of numbers, strings, or
            equal-shape arrays; empty sequences become all padding.
        maxlen: the output length; None for the longest sequence's length.
        dtype: the output dtype (``object`` for variable-length strings).
        padding: ``"pre"`` or ``"post"``: pad before or after each sequence.
        truncating: ``"pre"`` or ``"post"``: drop the values of a sequence longer than maxlen at
            its beginning or its end.
        value: the padding value.

    Returns:
        An array of shape ``(len(sequences), maxlen) + sample_shape``, the sample shape being
        that of the first non-empty sequence's elements (every other must match).

    Where Keras fails by accident this returns the evident result: ``maxlen=0`` gives
    ``(n, 0)`` for either truncation, and no sequences with ``maxlen=None`` give ``(0, 0)``.
    """
    if not hasattr(sequences, "__len__") or isinstance(sequences, (str, bytes)):
        raise ValueError(f"pad_sequences: sequences must be a list of sequences, got "
                         f"{sequences!r:.80}")
    for name, arg in (("padding", padding), ("truncating", truncating)):
        if not isinstance(arg, str) or arg not in ("pre", "post"):
            raise ValueError(f"pad_sequences: {name} must be 'pre' or 'post', got {arg!r}")
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, numbers.Integral)
                               or maxlen < 0):
        raise ValueError(f"pad_sequences: maxlen must be None or a non-negative integer, got "
                         f"{maxlen!r}")
    try:
        np.dtype(dtype)
    except TypeError:
        raise ValueError(f"pad_sequences: dtype must be a NumPy dtype, got {dtype!r}") from None
    lengths, sample_shape = [], None
    for i, seq in enumerate(sequences):
        try:
            lengths.append(len(seq))
        except TypeError:
            raise ValueError(f"pad_sequences: sequences must be a list of sequences; the item at "
                             f"position {i} is {seq!r:.80}") from None
        if sample_shape is None and lengths[-1]:
            sample_shape = np.asarray(seq).shape[1:]
    sample_shape = sample_shape or ()
    if maxlen is None:
        maxlen = max(lengths, default=0)
    is_text = np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.bytes_)
    if isinstance(value, str) and dtype is not object and not is_text:
        raise ValueError(f"pad_sequences: dtype {dtype!r} cannot hold the string value {value!r}; "
                         f"use dtype=object for variable-length strings")
    out = np.full((len(lengths), int(maxlen)) + sample_shape, value, dtype=dtype)
    if maxlen == 0:
        return out
    for i, seq in enumerate(sequences):
        if not lengths[i]:
            continue
        kept = np.asarray(seq[-maxlen:] if truncating == "pre" else seq[:maxlen], dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError(f"pad_sequences: the sequence at position {i} has elements of shape "
                             f"{kept.shape[1:]}, the first non-empty one {sample_shape}")
        if padding == "post":
            out[i, :len(kept)] = kept
        else:
            out[i, -len(kept):] = kept
    return out
