"""The shape products every window layer (convolution, pooling) is tested over, shared by the test files."""
import itertools

KERNELS = [1, 2, 3, 5, 7, (2, 5), (5, 2)]
STRIDES = [1, 2, 3, (1, 2), (3, 1)]
PADDINGS = ["valid", "same"]
# (batch, height, width): odd/even heights and widths, batch 1 and 2; every kernel above fits 'valid'
SIZES = [(2, 7, 8), (1, 8, 7)]
WINDOW_CASES = list(itertools.product(KERNELS, STRIDES, PADDINGS, SIZES))


def case_id(case):
    """A readable pytest id: ``k(2,5)-s(1,2)-same-in2x7x8``."""
    k, s, p, size = case
    return f"k{k}-s{s}-{p}-in{'x'.join(map(str, size))}".replace(" ", "")
