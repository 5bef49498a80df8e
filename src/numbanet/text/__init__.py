"""Text: turning strings into token ids, padding token sequences, and Word2Vec word embeddings.

* :class:`TextVectorization`: a layer mapping strings to token ids (``keras.layers.TextVectorization``).
* :func:`pad_sequences`: ragged sequences -> one padded array (``keras.utils.pad_sequences``).
* :class:`Word2Vec`: skip-gram / CBOW word vectors with negative sampling (gensim 4's model),
  trained by numbanet's word2vec kernels; its ``wv`` is a :class:`KeyedVectors`.
"""
from .keyedvectors import KeyedVectors
from .sequences import pad_sequences
from .vectorization import TextVectorization
from .word2vec import Word2Vec

__all__ = ["KeyedVectors", "TextVectorization", "Word2Vec", "pad_sequences"]
