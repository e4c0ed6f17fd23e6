"""Text summary of a model: one row per layer call with its output shape, parameters and multiply-adds."""
from __future__ import annotations

from .layers.base import format_shape


def layer_rows(model):
    """Yield ``(name, type, output shape, params, macs, inbound names)`` for each layer call, in run order.

    A layer called several times appears once per call; its parameters are counted on its first call only.
    """
    seen = set()
    for node in model.nodes:
        layer = node.layer
        params = layer.count_params() if id(layer) not in seen else 0
        seen.add(id(layer))
        yield (layer.name, type(layer).__name__, node.output.example_shape, params, node.count_macs(),
               [t.node.layer.name for t in node.inputs])


def summary_text(model, line_length=98):
    """The table :meth:`tinynet.Model.summary` prints."""
    widths = [max(30, line_length - 68), 22, 14, 16]
    head = ["Layer (type)", "Output Shape", "Param #", "Mult-adds"]

    def fmt(cols):
        name, shape, params, macs = cols
        return f"{name:<{widths[0]}} {shape:<{widths[1]}} {params:>{widths[2]}} {macs:>{widths[3]}}"

    lines = [f'Model: "{model.name}"', "=" * line_length, fmt(head), "=" * line_length]
    total_macs = 0
    for name, kind, shape, params, macs, _ in layer_rows(model):
        label = f"{name} ({kind})"
        if len(label) > widths[0]:
            label = label[: widths[0] - 1] + "…"
        lines.append(fmt([label, format_shape(shape), f"{params:,}", f"{macs:,}"]))
        total_macs += macs
    total = model.count_params()
    trainable = model.count_trainable_params()
    lines += [
        "=" * line_length,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Mult-adds per example: {total_macs:,}",
        "_" * line_length,
    ]
    return "\n".join(lines)
