"""Algorithms that make control policies: behaviour cloning, IQL, DSRL / DSRL-NA, GoRL, PGD with TD3+BC, TGPO."""
