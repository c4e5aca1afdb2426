"""Decision-time steering: controllers that run a search strategy over the control process at every step."""
