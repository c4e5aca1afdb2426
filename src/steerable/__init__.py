"""steerable: steer generative policies through activations, sampling and weights."""

__version__ = "0.1.0"
