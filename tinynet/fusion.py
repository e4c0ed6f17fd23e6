"""Horizontal fusion: sibling 1×1 convolutions that read one tensor run as one matrix product.

An Inception block reads its input with three 1×1 convolutions (the 1×1 branch and the reductions in front of
the 3×3 and the 5×5). Each is ``Z_i = X W_i + b_i`` on the same ``X`` (N·H·W, C), so side by side they are one
product with the kernels concatenated along the output channels,

.. math::

    [Z_1 \\; Z_2 \\; Z_3] = X \\, [W_1 \\; W_2 \\; W_3] + [b_1 \\; b_2 \\; b_3],

and their outputs are column blocks of one matrix (views, no copies). Backward, with ``G = [G_1 G_2 G_3]``
(each ``∂L/∂Z_i`` after the ReLU's derivative), the weight gradients are the column blocks of one product
``X^T G``, the bias gradients the blocks of ``Σ_rows G``, and the input gradient, which the three branches would
each compute and then add, is one product ``G [W_1 W_2 W_3]^T``. Three thin products become one wide one:
BLAS runs it faster (K = 16 or 32 output channels use a matrix unit poorly), and two fan-out additions of
the input's size disappear.

This is a fast path (:func:`tinynet.set_fast_paths`): the model finds the groups once (:func:`find_groups`)
and runs a group where it would run its first member. The layers keep their own weights, names and
gradients; only the arithmetic is shared. ``tests/test_fast_paths.py`` checks it against the plain layers.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_array_module, is_gpu_array
from .layers import activations
from .layers.conv import Conv2D

#: activations the fused bias + activation kernels cover; a group shares one
FUSABLE_ACTIVATIONS = ("relu", "linear")


class PointwiseCache(NamedTuple):
    """What :meth:`PointwiseGroup.forward` keeps for the backward pass of one call."""

    x2d: object      # the input as rows, (N·H·W, C): X in ∂L/∂W = X^T G
    kernel: object   # the members' kernels side by side, (C, ΣK)
    y: object        # the members' outputs side by side, (N·H·W, ΣK)
    x_shape: tuple   # (N, H, W, C)


def _fusable(node):
    """A call of a plain Conv2D 1×1 with strides 1 (any padding is none for 1×1), a fusable activation, and
    the standard forward/backward (a subclass that overrides them runs on its own)."""
    layer = node.layer
    return (type(layer) is Conv2D and len(node.inputs) == 1 and layer.built
            and layer.kernel_size == (1, 1) and layer.strides == (1, 1)
            and layer.activation in FUSABLE_ACTIVATIONS)


class PointwiseGroup:
    """Two or more 1×1 convolutions (graph nodes) reading the same tensor, with the same activation.

    Attributes
    ----------
    nodes : list of Node, in the model's execution order
    layers : list of Conv2D, one per node (distinct)
    input : SymbolicTensor, the tensor they all read
    spans : list of (start, stop), each member's output channels in the fused product
    """

    def __init__(self, nodes):
        self.nodes = list(nodes)
        self.layers = [node.layer for node in self.nodes]
        self.input = self.nodes[0].inputs[0]
        self.activation = self.layers[0].activation
        self._act, self._act_grad = activations.get(self.activation)
        self.spans, start = [], 0
        for layer in self.layers:
            self.spans.append((start, start + layer.filters))
            start += layer.filters
        self.label = "fused 1×1 convolutions (" + ", ".join(f"'{layer.name}'" for layer in self.layers) + ")"

    def accepts(self, x):
        """Whether this call can be fused: ``x`` is 4-D with the kernels' channels and dtype, on their device.
        Anything else runs layer by layer, where the layers' own checks report it."""
        if getattr(x, "ndim", 0) != 4:
            return False
        on_gpu = is_gpu_array(x)
        for layer in self.layers:
            kernel = layer.weights[0]
            if kernel.dtype != x.dtype or kernel.shape[2] != x.shape[-1] or is_gpu_array(kernel) != on_gpu:
                return False
        return True

    def forward(self, x):
        """Run every member on ``x`` (N, H, W, C); return their outputs (views of one array) and the cache."""
        xp = get_array_module(x)
        n, h, w, c = x.shape
        x2d = x.reshape(-1, c)
        kernel = xp.concatenate([layer.weights[0].reshape(c, layer.filters) for layer in self.layers], axis=1)
        bias = None
        if any(layer.use_bias for layer in self.layers):
            bias = xp.concatenate([layer.weights[1] if layer.use_bias else xp.zeros(layer.filters, x.dtype)
                                   for layer in self.layers])
        y = activations.bias_activation(x2d @ kernel, bias, self.activation, self._act)
        outputs = [y[:, a:b].reshape(n, h, w, b - a) for a, b in self.spans]
        return outputs, PointwiseCache(x2d, kernel, y, tuple(x.shape))

    def backward(self, output_grads, cache: PointwiseCache, input_grad=True):
        """Gradients of every member from the gradients of their outputs (``None`` for one the loss does not
        reach: its block of ``G`` is zero and its layer gets no gradient from this call).

        Returns
        -------
        gx : array (N, H, W, C), or None without ``input_grad``
        param_grads : list, one per member: ``[∂L/∂kernel (1, 1, C, K), ∂L/∂bias (K,)]`` (no bias gradient
            for a layer without bias), or ``None`` for a member whose output got no gradient
        """
        xp = get_array_module(cache.y)
        g = xp.empty_like(cache.y)
        for (a, b), gi in zip(self.spans, output_grads):
            g[:, a:b] = 0 if gi is None else gi.reshape(-1, b - a)
        gz, gbias = activations.activation_bias_backward(g, cache.y, self.activation, self._act_grad, True)
        gkernel = cache.x2d.T @ gz
        param_grads = []
        for layer, (a, b), gi in zip(self.layers, self.spans, output_grads):
            if gi is None:
                param_grads.append(None)
                continue
            grads = [xp.ascontiguousarray(gkernel[:, a:b]).reshape(layer.weights[0].shape)]
            if layer.use_bias:
                grads.append(gbias[a:b].copy())
            param_grads.append(grads)
        gx = (gz @ cache.kernel.T).reshape(cache.x_shape) if input_grad else None
        return gx, param_grads


def find_groups(nodes):
    """The fusable groups among ``nodes`` (a model's nodes in execution order): calls of distinct plain
    1×1 convolutions reading the same tensor with the same activation, two or more of them.

    Returns
    -------
    dict
        ``id(node) -> PointwiseGroup`` for every member node.
    """
    by_key = {}
    for node in nodes:
        if _fusable(node):
            by_key.setdefault((id(node.inputs[0]), node.layer.activation), []).append(node)
    members = {}
    for group_nodes in by_key.values():
        if len(group_nodes) < 2 or len({id(node.layer) for node in group_nodes}) < len(group_nodes):
            continue
        group = PointwiseGroup(group_nodes)
        for node in group_nodes:
            members[id(node)] = group
    return members


__all__ = ["PointwiseGroup", "PointwiseCache", "find_groups", "FUSABLE_ACTIVATIONS"]
