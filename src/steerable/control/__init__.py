"""Control policies, in rooms kept apart the way stable-baselines3 keeps environments, policies and algorithms:

- ``worlds/``: the built-in environments (PointNav2D, MemoryNav, STLNav, Pendulum by name), STL formulas and the
  scripted planner's offline datasets;
- ``policies/``: what acts: the chunked-action diffusion policy, the critics (IQL, TGPO's allocation critic),
  latent-noise actors, the action/observation normalisation they share;
- ``steering/``: decision-time methods, each a strategy over the control process (a step is one action chunk,
  conditioned on the episode's :class:`~steerable.control.steering.process.Root`): V-GPS, RTI, past-token
  verification, STL guidance and FK, lookahead search, TGPO's allocation search, acting with a noise policy;
- ``evaluate.py``: seeded episodes side by side, their success, return and cost;
- ``training/``: algorithms that make policies: BC, IQL, DSRL and DSRL-NA, GoRL, policy-guided diffusion with
  TD3+BC, TGPO's time-conditioned policy and critic;
- ``registry.py``: the methods of ``steerable control eval`` by name, their budgets and options.
"""
