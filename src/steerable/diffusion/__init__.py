"""Diffusion models as step-wise processes: built-in worlds, a process over diffusers, FK steering, DTS, guidance.

Needs the ``[diffusion]`` extra (diffusers, scikit-learn).
"""
