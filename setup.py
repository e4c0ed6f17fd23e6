from setuptools import find_packages, setup

setup(
    name="tinynet",
    version="0.1.0",
    description="A from-scratch deep-learning engine (NumPy, Numba, CuPy) and Inception v1 (GoogLeNet) on top of it",
    packages=find_packages(include=["tinynet", "tinynet.*", "inception", "inception.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=2",
        "numba>=0.60",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
        "pillow>=10",
    ],
    extras_require={
        "gpu": ["cupy-cuda13x"],
        "keras": ["keras>=3.5", "jax>=0.4.30"],
        "dev": ["pytest>=7", "hypothesis>=6.80"],
        "notebooks": ["nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "ipywidgets>=8.1"],
    },
)
