"""numbanet: a small deep-learning framework whose every hot loop is a Numba kernel.

    import numbanet as nb
    model = nb.Sequential([nb.layers.Dense(10, activation="softmax")], input_shape=(64,))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
__version__ = "0.1.0"

from . import (callbacks, data, datasets, initializers, layers, losses, metrics, ops,
               optimizers, regularizers, schedules, testing, text, utils)
from .backend import cuda_available, get_backend
from .engine import GradientTape, Tensor, Variable, device
from .functional import Input
from .models import Model, Sequential, load_model
from .plot import plot_history
from .random import seed

__all__ = ["Model", "Sequential", "Input", "load_model", "GradientTape", "Tensor", "Variable",
           "device", "seed", "cuda_available", "get_backend", "layers", "ops", "optimizers",
           "losses", "metrics", "callbacks", "data", "datasets", "initializers", "regularizers",
           "schedules", "plot_history", "testing", "utils"]
