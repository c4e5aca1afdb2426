"""What acts and what judges: the diffusion policy, critics, latent-noise actors and the normalisation they share."""
