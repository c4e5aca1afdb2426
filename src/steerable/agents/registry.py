"""Agent methods by name, as ``steerable agent scale`` and the server name them, and what a budget counts.

The same :class:`~steerable.registry.Registry` as the other families:
``greedy`` (one episode at temperature 0), ``bon`` (N episodes at the
sampling temperature in copies of the environment, the one the value
function rates best committed), ``tree`` (best-first tree search over
environment states with node budget N), ``plangen`` (PlanGEN's selection
agent choosing among best-of-N, beam, particle filtering and refinement per
instance, until the value function passes a plan; its budget is N generated
tokens per task, so ``plangen:arms=bon`` is best-of-N alone at equal tokens),
and on the chains tasks ``aries`` (a policy over a thought graph) against
``static`` (a fixed Graph-of-Thoughts schedule), whose budget is model calls,
``iad`` and ``resample`` (calls with and without the environment's review),
and ``ctrls`` (N episodes, each turn steered by the latent action a trained
policy picks from the hidden state).
Options go after the name: ``tree:branching=3:depth=2``.
"""

from __future__ import annotations

from steerable.agents.aries import Aries, StaticSchedule
from steerable.agents.ctrls import Ctrls
from steerable.agents.iad import IterativeAgentDecoding
from steerable.agents.plangen import PlanGEN
from steerable.agents.process import answer_of
from steerable.agents.tree import OracleValue, TreeSearch
from steerable.agents.workspace import MarkovianWorkspace
from steerable.errors import ConfigError
from steerable.registry import Entry, Registry
from steerable.search.best_of_n import BestOfN, Greedy
from steerable.search.registry import parse_method

#: decoded greedily, and rated by no value function
_GREEDY = {"greedy": True, "scored": False}
#: sampled, and scored by their own verifier rather than a value function
_UNSCORED = {"scored": False}
METHODS = Registry(
    "agent method",
    {
        "greedy": Entry(Greedy, "ignored: one episode", "one episode at temperature 0", extra=_GREEDY),
        "bon": Entry(BestOfN, "N episodes in copies of the environment", "the episode the value function rates best"),
        "tree": Entry(TreeSearch, "node budget c of each search (node evaluations)", "best-first tree search "
                      "(Koh et al.)"),
        "transcript": Entry(Greedy, "ignored: one episode", "the growing transcript: every round in one context "
                            "(greedy)", extra=_GREEDY),
        "ctrls": Entry(Ctrls, "N steered episodes in copies of the environment", "CTRLS: each turn steered by the "
                       "latent action a trained policy picks from the hidden state; the episode the value function "
                       "rates best"),
        "workspace": Entry(MarkovianWorkspace, "ignored: one episode in rounds", "IterResearch's Markovian "
                           "workspace: question, report, last action and observation (greedy; chains)", extra=_GREEDY),
        "iad": Entry(IterativeAgentDecoding, "calls N (episodes; stops once one solves)", "iterative agent decoding: "
                     "each call shown the best and worst candidate with the environment's review (chains)",
                     extra=_UNSCORED),
        "resample": Entry(IterativeAgentDecoding, "calls N (episodes; stops once one solves)", "the same calls "
                          "without feedback: separates the feedback from the sampling (chains)",
                          preset={"feedback": False}, extra=_UNSCORED),
        "plangen": Entry(PlanGEN, "N generated tokens per task, every round's (rounds stop once spent)",
                         "PlanGEN: modified-UCB selection among bon, beam, pf and refinement until the value "
                         "function passes a plan (arms=bon: one algorithm alone)"),
        "aries": Entry(Aries, "model calls (solve and refine rows) per task", "ARIES (Gimenes et al.): a policy "
                       "reads the thought graph's summary and picks decompose, solve, refine, aggregate or stop "
                       "(chains; nodes scored by the step verifier)", extra=_UNSCORED),
        "static": Entry(StaticSchedule, "model calls per task (the schedule stops where they run out)", "a static "
                        "Graph-of-Thoughts schedule: parts of k ops, s solutions each, the best kept, r refinements "
                        "(chains)", extra=_UNSCORED),
    },
)  # fmt: skip


def make_method(spec: str):
    """A method by name or ``name:key=value:...`` (``tree:branching=3``)."""
    name, options = parse_method(spec) if ":" in spec else (spec, {})
    return name, METHODS.build(name, options, extract=answer_of)


def is_greedy(name: str) -> bool:
    """Whether a method decodes greedily and uses no value function (greedy, transcript, workspace)."""
    return bool(METHODS.entry(name).extra.get("greedy"))


def needs_value(name: str) -> bool:
    """Whether a method rates states with the value function (bon, tree); aries and static use their verifier."""
    return bool(METHODS.entry(name).extra.get("scored", True))


def make_value(name: str, generator=None, model: str = "builtin:agent"):
    """The value function by name: ``oracle`` (exact, :class:`OracleValue`), ``head`` (the value head shipped
    beside ``builtin:agent``) or ``head:DIR`` (one fitted by ``steerable agent train-value --out DIR``), which
    runs on ``generator``'s model."""
    if name == "oracle":
        return OracleValue()
    if name == "head" or name.startswith("head:"):
        from steerable.agents.value import ValueHead
        from steerable.lm.loading import AGENT_VALUE_DIR, model_fingerprint

        if generator is None:
            raise ConfigError("the value head needs the acting model: pass its generator")
        where = name[5:] or str(AGENT_VALUE_DIR)
        return ValueHead.load(where, generator.model, generator.tokenizer, model_fingerprint(model))
    raise ConfigError(f"unknown value function {name!r}: use oracle, head or head:DIR")
