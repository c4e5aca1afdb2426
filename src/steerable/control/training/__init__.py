"""Algorithms that make control policies: behaviour cloning, IQL, DSRL / DSRL-NA, GoRL, PGD with TD3+BC, TGPO,
and the policy gradients of npg.py (N-PG-IGT, (N)-HARPG, STORM-PG, REINFORCE)."""
