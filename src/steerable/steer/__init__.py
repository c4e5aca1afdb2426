"""Activation steering: interventions on the residual stream, vectors and directions, artifacts."""

from steerable.steer.interventions import Ablate, Add, Steering, steer
from steerable.steer.layers import decoder_layers

__all__ = ["Ablate", "Add", "Steering", "decoder_layers", "steer"]
