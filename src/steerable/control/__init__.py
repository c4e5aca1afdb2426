"""Control policies: the built-in navigation world, offline data, critics, diffusion policies and their steering."""
