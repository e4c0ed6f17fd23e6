"""Bridges to other frameworks. :mod:`tinynet.interop.keras` converts models from and to Keras 3.

Nothing here is imported by ``import tinynet``: Keras is only loaded when you import the bridge.
"""
