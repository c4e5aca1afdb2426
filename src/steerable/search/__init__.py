"""Strategies over a step-wise process, guided by scorers, under a budget."""

from steerable.search.astar import AStar
from steerable.search.beam import BeamSearch
from steerable.search.best_of_n import BestOfN, Greedy, SelfConsistency, WeightedBestOfN
from steerable.search.lm_process import LMProcess
from steerable.search.mcts import MCTS
from steerable.search.particle_filter import ParticleFilter
from steerable.search.particle_gibbs import ParticleGibbs
from steerable.search.process import Process
from steerable.search.refine import IterativeRefine
from steerable.search.result import Candidate, Cost, Result

__all__ = [
    "AStar",
    "BeamSearch",
    "BestOfN",
    "Candidate",
    "Cost",
    "Greedy",
    "IterativeRefine",
    "LMProcess",
    "MCTS",
    "ParticleFilter",
    "ParticleGibbs",
    "Process",
    "Result",
    "SelfConsistency",
    "WeightedBestOfN",
]
