"""numbanet: a small deep-learning framework whose every hot loop is a Numba kernel.

    import numbanet as nb
    model = nb.Sequential([nb.layers.Dense(10, activation="softmax")], input_shape=(64,))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
__version__ = "0.1.0"

from . import (callbacks, data, datasets, initializers, layers, losses, metrics, optimizers,
               regularizers, schedules, testing)
from .backend import cuda_available, get_backend
from .models import Sequential, load_model
from .plot import plot_history
from .random import seed

__all__ = ["Sequential", "load_model", "seed", "cuda_available", "get_backend", "layers",
           "optimizers", "losses", "metrics", "callbacks", "data", "datasets", "initializers",
           "regularizers", "schedules", "plot_history", "testing"]
