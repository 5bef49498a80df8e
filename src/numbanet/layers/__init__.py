"""Layers (Keras names, PyTorch's NCHW image layout)."""
from .attention import (AdditiveAttention, Attention, MultiHeadAttention, PositionalEmbedding,
                        SinePositionEncoding, TransformerDecoder, TransformerEncoder)
from .augmentation import (GaussianDropout, GaussianNoise, RandomFlip, RandomRotation,
                           RandomTranslation, RandomZoom, SpatialDropout2D)
from ..registry import Registry
from .base import Layer
from .conv import (AveragePooling2D, AvgPool2D, Conv2D, Conv2DTranspose, GlobalAveragePooling2D,
                   GlobalAvgPool2D, GlobalMaxPool2D, GlobalMaxPooling2D, MaxPool2D, MaxPooling2D,
                   UpSampling2D)
from .core import (ELU, GELU, Activation, ActivityRegularization, Dense, Dropout, Flatten, Lambda,
                   LeakyReLU, Permute, PReLU, ReLU, Reshape, Sigmoid, Softmax, Softplus, Tanh)
from .merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from .lookup import Discretization, Hashing, IntegerLookup, StringLookup
from .normalization import (BatchNormalization, GroupNormalization, LayerNormalization,
                            UnitNormalization)
from .preprocessing import CategoryEncoding, Normalization, Rescaling
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from .reshaping import (Cropping1D, Cropping2D, Identity, RepeatVector, TimeDistributed,
                        UpSampling1D, ZeroPadding1D, ZeroPadding2D)
from .sequence import (AveragePooling1D, AvgPool1D, Conv1D, Embedding, GlobalAveragePooling1D,
                       GlobalMaxPooling1D, Masking, MaxPool1D, MaxPooling1D)

REGISTRY = Registry("layer", Layer, hint="; register a custom layer with "
                                         "nb.layers.register(MyLayer)")
LAYERS = REGISTRY.classes
for _cls in (
        Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Reshape, Permute, Dropout, Activation, ReLU,
        LeakyReLU, ELU, GELU, Sigmoid, Tanh, Softplus, Softmax, BatchNormalization,
        LayerNormalization, SpatialDropout2D, RandomFlip, RandomTranslation, RandomRotation,
        RandomZoom, GaussianNoise,
        GlobalAveragePooling2D, GlobalMaxPooling2D, Add, Subtract, Multiply, Average, Maximum,
        Minimum, Concatenate, Embedding, Masking, Conv1D, MaxPool1D, AvgPool1D,
        GlobalAveragePooling1D, GlobalMaxPooling1D, SimpleRNN, LSTM, GRU, Bidirectional,
        Conv2DTranspose, UpSampling2D, MultiHeadAttention, PositionalEmbedding,
        SinePositionEncoding, TransformerEncoder, TransformerDecoder, Identity, RepeatVector,
        TimeDistributed, ZeroPadding1D, ZeroPadding2D, Cropping2D, UpSampling1D, Rescaling,
        Normalization, Attention, AdditiveAttention, Dot, PReLU, ActivityRegularization,
        GroupNormalization, UnitNormalization, GaussianDropout, Cropping1D,
        CategoryEncoding, StringLookup, IntegerLookup, Hashing, Discretization):
    REGISTRY.register(_cls)
del _cls

from ..functional import Input  # noqa: E402  (Keras has it in keras.layers too)


def get(name):
    """A layer class by its name (used when loading a saved model)."""
    return REGISTRY.lookup(name)


def register(cls):
    """Make a layer class known to ``load_model``."""
    return REGISTRY.register(cls)


from ..text.vectorization import TextVectorization  # noqa: E402  (keras.layers has it too)
