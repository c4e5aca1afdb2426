"""A request's ``scaling`` run: a strategy over the engine's generator, bounded and cancellable.

The run happens on the engine thread (it needs the model), so it must end:
every strategy option is typed and bounded (``make_strategy``), and a
:class:`Guard` sits between the strategy and the model. Before each step and
each scorer call it checks whether the client has left (the run stops at
once) and whether the tokens generated plus the tokens the scorer read have
passed the request's cap (``--max-request-tokens``): a strategy's total is not
known before it runs, so the run is stopped with an error when it gets there.

A streamed run (``"stream": true``) is the same run watched
(:class:`~steerable.search.watch.Watch`): each init, step, score and selection
becomes one event, sent as it happens. Their number is bounded by the run's
own work, which the limits above already bound: one step event per
``propose`` (at most 64 steps per row, and ``budget`` rows, or ``budget``
simulations of MCTS, at a time: O(budget x steps)), one score event per scorer
call, one select or concat per resampling or pool. Each event carries at most
one preview or score per row, a preview at most ``max_tokens`` tokens of text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from steerable.agents.process import AgentProcess
from steerable.errors import SteerableError
from steerable.lm.types import SamplingParams
from steerable.reward.scorer import CachedScorer, Scorer
from steerable.search.lm_process import LMProcess, LMState
from steerable.search.result import Result
from steerable.search.watch import Watch


class Cancelled(SteerableError):
    """The client of a running request has gone."""


class OverBudget(SteerableError):
    """A request used more tokens than the server's per-request cap."""


@dataclass
class Guard:
    """Shared by a run's process and scorer: stops the run when the client leaves or the cap is passed."""

    cap: int | None  # generated + scored tokens the request may use
    cancelled: bool = False
    generated: int = 0
    scored: int = 0
    env_cap: int | None = None  # environment steps an agent run may take (every copy's)
    env_steps: int = 0

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("the client closed the connection")
        if self.env_cap is not None and self.env_steps > self.env_cap:
            raise OverBudget(
                f"the agent run took {self.env_steps} environment steps, over the server's --max-request-env-steps "
                f"of {self.env_cap}: lower budget or the task's max_steps"
            )
        used = self.generated + self.scored
        if self.cap is not None and used > self.cap:
            raise OverBudget(
                f"the scaling run used {used} tokens ({self.generated} generated, {self.scored} scored), over the "
                f"server's --max-request-tokens of {self.cap}: lower budget, max_tokens or max_step_tokens"
            )


@dataclass
class GuardedProcess(LMProcess):
    """An LM process that asks the guard before every step and counts what it generated."""

    guard: Guard = field(default_factory=lambda: Guard(None))

    def init(self, prompt: str, n: int, seed: int | None = None) -> LMState:
        self.guard.check()
        return super().init(prompt, n, seed)

    def propose(self, state: LMState, skip: Sequence[int] = ()) -> None:
        self.guard.check()
        before = self.usage.generated_tokens
        super().propose(state, skip)
        self.guard.generated += self.usage.generated_tokens - before


class GuardedScorer:
    """A scorer that asks the guard before every call and counts the tokens it read."""

    def __init__(self, scorer: Scorer, guard: Guard):
        self.scorer, self.guard = scorer, guard
        self.range = scorer.range

    @property
    def calls(self) -> int:
        return self.scorer.calls

    @property
    def forward_tokens(self) -> int:
        return self.scorer.forward_tokens

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        self.guard.check()
        before = self.forward_tokens
        out = self.scorer.score(prompts, partials)
        self.guard.scored += self.forward_tokens - before
        self.guard.check()
        return out


@dataclass
class ScalingRun:
    """Everything a scaling job needs, checked by the route before it is queued."""

    strategy: Any
    scorer: Any  # None for methods that use none
    budget: int
    prompt: str
    params: SamplingParams  # temperature, top-p, top-k, max_new_tokens (the sample cap), seed
    delimiter: str
    max_step_tokens: int
    steering: Callable[[], Any] | None = None  # makes the steering context to run inside
    guard: Guard = field(default_factory=lambda: Guard(None))
    watch: Watch | None = None  # a streamed run: every init, step, score and selection reported
    controller: dict | None = None  # after the run: what a controller chose for the prompt (steered by one)
    gold: str | None = None  # a built-in problem's answer, judged with the built-in checker (else None)

    def __call__(self, generator) -> tuple[Result, float]:
        process = GuardedProcess(
            generator,
            delimiter=self.delimiter,
            params=SamplingParams(
                temperature=self.params.temperature, top_p=self.params.top_p, top_k=self.params.top_k
            ),
            max_step_tokens=self.max_step_tokens,
            max_steps=64,
            max_tokens=self.params.max_new_tokens,
            guard=self.guard,
        )
        scorer = None
        if self.scorer is not None:
            if isinstance(self.scorer, CachedScorer):  # a run starts cold, whatever ran before it
                self.scorer.clear_cache()
            scorer = GuardedScorer(self.scorer, self.guard)
        if self.watch is not None:
            process, scorer = self.watch.process(process), self.watch.scorer(scorer)
        seed = self.params.seed if self.params.seed is not None else 0
        t0 = time.perf_counter()
        with self.steering() if self.steering is not None else nullcontext() as steering:
            res = self.strategy.run(process, scorer, self.budget, self.prompt, seed=seed)
        self.controller = controller_choice(steering)
        return res, time.perf_counter() - t0


def show_text(process: LMProcess, state: LMState) -> list[str]:
    """The playground's preview of each row: its text after the prompt (no model call)."""
    return list(process.preview(state))


def controller_choice(steering: Any) -> dict | None:
    """What a controller steering context chose for the run's prompt (None for other steering or none)."""
    report = getattr(steering, "report", None)
    return report() if callable(report) else None


def make_run(spec, prompt: str, params: SamplingParams, config, steering: Callable[[], Any] | None) -> ScalingRun:
    """The run a request's ``scaling`` field asks for, with the server's limits checked (400s naming the field).

    ``config`` is the server's :class:`~steerable.serve.app.ServeConfig`.
    """
    from steerable.search.registry import UNSCORED, make_strategy
    from steerable.serve.openai import APIError, builtin_gold
    from steerable.tasks.answers import make_checker

    if spec.budget > config.max_budget:
        raise APIError(400, f"scaling.budget must be <= {config.max_budget} (got {spec.budget})", "scaling.budget")
    if spec.max_step_tokens > config.max_tokens:
        raise APIError(400, f"scaling.max_step_tokens must be <= {config.max_tokens}", "scaling.max_step_tokens")
    try:
        checker = make_checker(spec.answer_format, spec.answer_regex, what="scaling.answer_regex")
    except SteerableError as e:
        raise APIError(400, str(e), "scaling.answer_regex") from None
    try:
        strategy = make_strategy(spec.method, checker.extract, spec.options)
    except SteerableError as e:
        raise APIError(400, f"scaling: {e}", "scaling.options") from None
    scorer = None
    if spec.method not in UNSCORED:
        name = spec.scorer or next(iter(config.scorers), None)
        if name not in config.scorers:
            have = ", ".join(sorted(config.scorers)) or "none (start the server with --prm builtin)"
            raise APIError(400, f"{spec.method} needs a scorer; {name!r} is not loaded: use {have}", "scaling.scorer")
        scorer = config.scorers[name]
    return ScalingRun(
        strategy,
        scorer,
        spec.budget,
        prompt,
        params,
        spec.delimiter or ("\n" if config.model_name == "builtin" else "\n\n"),
        spec.max_step_tokens,
        steering=steering,
        guard=Guard(config.max_request_tokens),
        # only where the request's answers are read the built-in way: then `correct` means what `steerable scale`
        # means by it
        gold=builtin_gold(prompt) if spec.answer_format == "builtin" and not spec.answer_regex else None,
    )


@dataclass
class GuardedAgentProcess(AgentProcess):
    """The agent process asking the guard before every turn, counting tokens generated and environment steps."""

    guard: Guard = field(default_factory=lambda: Guard(None))

    def init(self, cond, n: int, seed: int | None = None):
        self.guard.check()
        return super().init(cond, n, seed)

    def propose(self, state, rows=None) -> None:
        self.guard.check()
        before = self.usage
        super().propose(state, rows)
        spent = self.usage - before
        self.guard.generated += spent.generated_tokens
        self.guard.env_steps += spent.env_steps

    def select(self, state, rows):
        before = self.usage.env_steps  # a replay fork steps environments too
        out = super().select(state, rows)
        self.guard.env_steps += self.usage.env_steps - before
        return out


@dataclass
class AgentRun:
    """An agent scaling job: a method of :mod:`steerable.agents.registry` on a task, in the server's own copy of
    its environment, bounded by the request's token and environment-step caps."""

    name: str  # the method's name in the registry
    method: Any
    value: Any  # None for greedy
    budget: int
    task: dict
    params: SamplingParams
    guard: Guard

    def __call__(self, generator) -> tuple[Result, float]:
        from steerable.agents.process import episode
        from steerable.agents.registry import is_greedy
        from steerable.lm.local import LocalGenerator

        # the episode's prompt is the agent model's own text: never wrapped in a chat template
        raw = LocalGenerator(generator.model, generator.tokenizer, chat_template="never")
        # a searching method samples at the request's temperature and top-p (temperature 0 included: the client
        # asked for it), a greedy one at 0
        temperature = 0.0 if is_greedy(self.name) else self.params.temperature
        params = SamplingParams(temperature=temperature, top_p=self.params.top_p)
        process = GuardedAgentProcess(raw, params, max_tokens=self.params.max_new_tokens, guard=self.guard)
        value = GuardedScorer(self.value, self.guard) if self.value is not None else None
        seed = self.params.seed if self.params.seed is not None else 0
        t0 = time.perf_counter()
        res = self.method.run(process, value, self.budget, episode(self.task), seed=seed)
        return res, time.perf_counter() - t0


def make_agent_run(spec, params: SamplingParams, config, generator) -> AgentRun:
    """The agent run a request's ``scaling.task`` asks for (400s naming the field)."""
    from steerable.agents.registry import is_greedy, make_method, make_value
    from steerable.serve.openai import APIError
    from steerable.tasks.agent.envs import make_env

    if config.tool_format != "agent":
        raise APIError(400, "scaling.task runs the built-in agent world: serve builtin:agent (--tool-format agent)",
                       "scaling.task")  # fmt: skip
    if spec.budget > config.max_budget:
        raise APIError(400, f"scaling.budget must be <= {config.max_budget} (got {spec.budget})", "scaling.budget")
    try:
        make_env(str(spec.task.get("env", ""))).reset(spec.task)
    except SteerableError as e:
        raise APIError(400, f"scaling.task: {e}", "scaling.task") from None
    # a request never names a file on the server: the prior and the value head are the ones shipped
    if str(spec.options.get("prior", "builtin")) not in ("builtin", "uniform"):
        raise APIError(400, "scaling.options.prior must be builtin or uniform (a server reads no file a request "
                       "names)", "scaling.options")  # fmt: skip
    if str(spec.options.get("policy", "")):
        raise APIError(400, "scaling.options.policy cannot be set: ctrls runs the policy shipped with the model (a "
                       "server reads no file a request names)", "scaling.options")  # fmt: skip
    if spec.value.startswith("head:"):
        raise APIError(400, "scaling.value must be oracle or head (a server reads no file a request names)",
                       "scaling.value")  # fmt: skip
    method_spec = spec.method + "".join(f":{k}={v}" for k, v in spec.options.items())
    try:
        name, method = make_method(method_spec)
        value = None if is_greedy(name) else make_value(spec.value, generator, config.model_name)
    except SteerableError as e:
        raise APIError(400, f"scaling: {e}", "scaling.method") from None
    return AgentRun(name, method, value, spec.budget, dict(spec.task), params,
                    Guard(config.max_request_tokens, env_cap=config.max_request_env_steps))  # fmt: skip
