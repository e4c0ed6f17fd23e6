"""Inception v1 (GoogLeNet) assembled from tinynet layers: blocks, auxiliary heads and the full network."""
from .blocks import aux_head, inception_block, naive_inception_block
from .googlenet import googlenet

__all__ = ["inception_block", "naive_inception_block", "aux_head", "googlenet"]
