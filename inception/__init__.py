"""Inception v1 (GoogLeNet) assembled from tinynet layers: blocks, auxiliary heads and the full network."""
from .blocks import aux_head, inception_block, naive_inception_block, stack_blocks
from .googlenet import googlenet
from .small import googlenet_small
from .variants import VARIANTS, get_variant

__all__ = ["inception_block", "naive_inception_block", "aux_head", "stack_blocks", "googlenet", "googlenet_small",
           "VARIANTS", "get_variant"]
