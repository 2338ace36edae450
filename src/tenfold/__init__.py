"""tenfold: ten 2021 vision research methods as one tested PyTorch toolkit with one CLI."""

__version__ = "0.1.0"
