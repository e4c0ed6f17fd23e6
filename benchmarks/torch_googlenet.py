"""A small PyTorch GoogLeNet matching ``inception.googlenet(variant='paper')``, for benchmark comparisons.

Same layers and channel counts (Table 1 of Szegedy et al. 2014): conv 7×7/2, max-pool 3×3/2, LRN(5, 1e-4,
0.75, 1) (PyTorch's LocalResponseNorm divides alpha by size, like Caffe), conv 1×1 64, conv 3×3 192, LRN,
max-pool, Inception 3a–5b with max-pools between stages, aux heads on 4a and 4d (avg-pool 5×5/3, conv 1×1 128,
FC 1024, dropout 0.7, FC classes), global average pooling, dropout 0.4, FC classes. PyTorch is NCHW and pads
symmetrically; at 224×224 every output size equals the Keras 'same' one. Outputs are logits (softmax lives in
the loss), returned as ``[aux1, aux2, main]`` in training mode.
"""
from __future__ import annotations

import torch
from torch import nn

BLOCKS = {  # name: (in, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj)
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


def conv_relu(cin, cout, k, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Figure 2(b): 1×1 | 1×1→3×3 | 1×1→5×5 | 3×3 max-pool→1×1, concatenated on channels."""

    def __init__(self, cin, c1, r3, c3, r5, c5, pp):
        super().__init__()
        self.b1 = conv_relu(cin, c1, 1)
        self.b3 = nn.Sequential(conv_relu(cin, r3, 1), conv_relu(r3, c3, 3))
        self.b5 = nn.Sequential(conv_relu(cin, r5, 1), conv_relu(r5, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), conv_relu(cin, pp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class AuxHead(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(5, 3), conv_relu(cin, 128, 1), nn.Flatten(),
                                 nn.Linear(4 * 4 * 128, 1024), nn.ReLU(inplace=True), nn.Dropout(0.7),
                                 nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.net(x)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000, aux=True):
        super().__init__()
        self.stem = nn.Sequential(
            conv_relu(3, 64, 7, stride=2), nn.MaxPool2d(3, 2, padding=1), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
            conv_relu(64, 64, 1), conv_relu(64, 192, 3), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
            nn.MaxPool2d(3, 2, padding=1))
        self.blocks = nn.ModuleDict({name: Inception(*cfg) for name, cfg in BLOCKS.items()})
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.aux1 = AuxHead(512, num_classes) if aux else None
        self.aux2 = AuxHead(528, num_classes) if aux else None
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4),
                                  nn.Linear(1024, num_classes))

    def forward(self, x):
        x = self.stem(x)
        heads = []
        for name, block in self.blocks.items():
            if name in ("4a", "5a"):
                x = self.pool(x)
            x = block(x)
            if self.training and self.aux1 is not None and name in ("4a", "4d"):
                heads.append((self.aux1 if name == "4a" else self.aux2)(x))
        return heads + [self.head(x)]
