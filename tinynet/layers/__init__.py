"""tinynet layers: Keras names, arguments and defaults, NHWC, forward and backward written by hand.

Notation used in every docstring of the package:

=========  =================================================
N          batch size
H, W, C    input height, width, channels
kh, kw     kernel (or pooling window) height and width
sh, sw     strides
Ho, Wo     output height and width
K          number of filters (output channels)
x, y       layer input and output; g = ∂L/∂y the upstream gradient
=========  =================================================
"""
from .base import CallCache, Layer, Node, NonFiniteError, ShapeError, SymbolicTensor, reset_names
from .conv import Conv2D
from .core import Activation, Concatenate, Dense, Dropout, Flatten, Input, InputLayer, ReLU, Softmax, concatenate
from .normalization import BatchNormalization, LocalResponseNormalization
from .pooling import AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, MaxPool2D, MaxPooling2D

__all__ = [
    "Layer", "Node", "CallCache", "ShapeError", "NonFiniteError", "SymbolicTensor", "reset_names",
    "Input", "InputLayer", "Conv2D", "Dense", "Flatten", "Activation", "ReLU", "Softmax", "Dropout",
    "Concatenate", "concatenate", "BatchNormalization", "LocalResponseNormalization",
    "MaxPool2D", "MaxPooling2D", "AvgPool2D", "AveragePooling2D", "GlobalAveragePooling2D",
]
