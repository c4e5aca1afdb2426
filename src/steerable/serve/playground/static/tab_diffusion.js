// The diffusion tab: written by its own helper against the contract (Playground.registerTab); empty until then.
