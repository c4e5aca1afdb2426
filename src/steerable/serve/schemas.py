"""Request bodies of the server as pydantic models: every field typed and bounded, unknown fields refused.

FastAPI validates each body against these before a route runs, and the
OpenAPI schema (``/openapi.json``) is generated from them, so the fuzz tests
send what the schema allows and more. Limits that depend on how the server
was started (``--max-n``, ``--max-tokens``, the model's context, the
vocabulary, which artifacts and scorers are loaded) are checked by the
routes; the bounds here are the ones no server setting can lift.

OpenAI fields this server does not implement are declared, so a request that
sets them is refused with "not supported" instead of being silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

#: a sampling temperature below this is greedy decoding (vLLM's convention): 1e-300 would overflow the logits
GREEDY_BELOW = 1e-5
#: the most alternatives per position for ``logprobs`` / ``top_logprobs`` (vLLM's default cap)
MAX_TOP_LOGPROBS = 20
#: steering strengths are multiples of an artifact's own vector; past this they only produce noise
MAX_STRENGTH = 100.0


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (such as \\ud800): send valid UTF-8 text") from None
    return text


def _non_empty(text: str) -> str:
    if not text:
        raise ValueError("must be a non-empty string")
    return text


Text = Annotated[str, AfterValidator(_utf8)]
NonEmpty = Annotated[str, AfterValidator(_utf8), AfterValidator(_non_empty)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
TokenId = Annotated[int, Field(ge=0, le=(1 << 31) - 1)]


def _unsupported(what: str, allowed: tuple = (None,)):
    """A validator refusing any value but ``allowed`` (and empty lists or objects): a field of OpenAI's API
    that this server does not implement. ``what`` says what to do instead."""

    def check(value: Any) -> Any:
        if value not in allowed and not (isinstance(value, list | dict) and not value):
            raise ValueError(f"is not supported by this server: {what}")
        return value

    return AfterValidator(check)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SteeringSpec(Body):
    name: NonEmpty = Field(description="An artifact loaded with --steer NAME=PATH.")
    strength: Annotated[Finite, Field(ge=-MAX_STRENGTH, le=MAX_STRENGTH)] | None = Field(
        None, description="Overrides the artifact's own strength (0: no steering)."
    )


class ScalingSpec(Body):
    method: NonEmpty = Field(description="Any method of `steerable scale`: greedy, sc, bon, wbon, beam, pf, ...")
    budget: Annotated[int, Field(ge=1, le=4096)] = Field(4, description="Samples, particles, beams or simulations.")
    scorer: NonEmpty | None = Field(None, description="A loaded scorer: prm or oracle (default: the first).")
    delimiter: NonEmpty | None = Field(None, description="What ends a step (default: newline for the built-in model).")
    max_step_tokens: Annotated[int, Field(ge=1, le=1 << 20)] = Field(64, description="Most tokens per step.")
    answer_format: Literal["builtin", "boxed"] = "builtin"
    answer_regex: Annotated[Text, Field(max_length=1000)] | None = Field(
        None, description="Group 1 (or the match) of the last match is the answer; RE2 syntax."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The strategy's fields, e.g. {'temperature': 2}.")
    task: dict[str, Any] | None = Field(
        None,
        description="An agent task ({'env': 'lookup', ...}, the format of `steerable agent scale --task`): the "
        "server runs an agent method (greedy, bon, tree) in its own copy of that environment; the conversation is "
        "replaced by the task's prompt. Only for a model served with --tool-format agent.",
    )
    value: Literal["oracle", "head"] = Field("oracle", description="The value function of bon and tree on a task.")


class StreamOptions(Body):
    include_usage: bool = False
    continuous_usage_stats: Annotated[bool, _unsupported("usage comes once, at the end", (False,))] = False


class Sampling(Body):
    """Fields shared by completions and chat completions."""

    model: Text | None = None
    n: Annotated[int, Field(ge=1, le=4096)] = 1
    temperature: Annotated[Finite, Field(ge=0.0, le=2.0)] | None = Field(
        None, description=f"0 (or below {GREEDY_BELOW}) is greedy decoding; default 1."
    )
    top_p: Annotated[Finite, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=-1, le=1 << 20)] | None = Field(None, description="-1 or 0: no top-k filter.")
    max_tokens: Annotated[int, Field(ge=0, le=1 << 20)] | None = None
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=16)] | None = None
    seed: Annotated[int, Field(ge=-(1 << 63), le=(1 << 64) - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    steering: NonEmpty | SteeringSpec | None = None
    scaling: ScalingSpec | None = None
    user: Text | None = Field(None, description="An end-user id; recorded nowhere.")
    presence_penalty: Annotated[Finite | None, _unsupported("leave it out or send 0", (None, 0, 0.0))] = None
    frequency_penalty: Annotated[Finite | None, _unsupported("leave it out or send 0", (None, 0, 0.0))] = None
    repetition_penalty: Annotated[Finite | None, _unsupported("leave it out or send 1", (None, 1, 1.0))] = None
    logit_bias: Annotated[dict[str, Any] | None, _unsupported("leave it out")] = None
    min_tokens: Annotated[int | None, _unsupported("leave it out or send 0", (None, 0))] = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self


class CompletionRequest(Sampling):
    prompt: (
        Text
        | Annotated[list[Text], Field(min_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
    ) = Field(description="A string, a list of strings, token ids, or a list of token-id lists.")
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = Field(
        None, description="Return each token's logprob and this many most likely alternatives (0: none)."
    )
    echo: bool = Field(False, description="Put the prompt before the text (and its tokens' logprobs with logprobs).")
    best_of: Annotated[int | None, _unsupported("sample n and choose client-side, or use scaling", (None, 1))] = None
    suffix: Annotated[Text | None, _unsupported("no fill-in-the-middle; leave it out", (None, ""))] = None


class ContentPart(Body):
    type: Annotated[Text, _unsupported("send only text parts (type: text)", ("text",))]
    text: Text


#: the most tools a request may offer, and tool calls an assistant message may hold (OpenAI allows 128 tools)
MAX_TOOLS = 128
MAX_TOOL_CALLS = 64
#: a function's name: OpenAI's rule (letters, digits, underscores and dashes, at most 64)
ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
CallId = Annotated[Text, Field(min_length=1, max_length=128)]


def _object_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is not None and schema.get("type") != "object":
        raise ValueError('must be a JSON schema of an object: {"type": "object", "properties": {...}}')
    return schema


class FunctionSpec(Body):
    name: ToolName
    description: Annotated[Text, Field(max_length=8192)] | None = None
    parameters: Annotated[dict[str, Any] | None, AfterValidator(_object_schema)] = Field(
        None, description="A JSON schema of an object (the arguments)."
    )
    strict: bool | None = None


class ToolSpec(Body):
    type: Literal["function"]
    function: FunctionSpec


class FunctionCall(Body):
    name: ToolName
    arguments: Annotated[Text, Field(max_length=65536)] = Field(description="The arguments as JSON text.")


class ToolCall(Body):
    id: CallId
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionName(Body):
    name: ToolName


class NamedToolChoice(Body):
    type: Literal["function"]
    function: FunctionName


def _tool_choice(choice: str) -> str:
    if choice not in ("none", "auto"):
        raise ValueError(
            'must be none, auto or {"type": "function", "function": {"name": NAME}}'
            + (": required is not supported (nothing here constrains decoding)" if choice == "required" else "")
        )
    return choice


def _message_kind(value: Any) -> str | None:
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    if role in ("system", "developer"):
        return "system-message"
    return f"{role}-message" if role in ("user", "assistant", "tool") else None


class _MessageBase(Body):
    content: Text | list[ContentPart] | None = None
    name: Text | None = None
    tool_calls: None = Field(None, description="Only an assistant message holds tool calls.")
    tool_call_id: None = Field(None, description="Only a tool message answers a call.")


class SystemMessage(_MessageBase):
    role: Literal["system", "developer"]


class UserMessage(_MessageBase):
    role: Literal["user"]


class AssistantMessage(_MessageBase):
    role: Literal["assistant"]
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOL_CALLS)] | None = None  # type: ignore[assignment]


class ToolMessage(_MessageBase):
    role: Literal["tool"]
    tool_call_id: CallId  # type: ignore[assignment]


#: a chat message, told apart by its role (OpenAI's schema): the fields each role may carry are in the schema,
#: so a client (or a fuzzer) reading it knows that only an assistant message holds tool calls
#: (its tags are not field names, so an error's location reads messages[0].content, not messages[0].user.content)
Message = Annotated[
    Annotated[SystemMessage, Tag("system-message")]
    | Annotated[UserMessage, Tag("user-message")]
    | Annotated[AssistantMessage, Tag("assistant-message")]
    | Annotated[ToolMessage, Tag("tool-message")],
    Discriminator(_message_kind),
]


_TEXT_ONLY = _unsupported('plain text only; leave it out or send {"type": "text"}', (None, {"type": "text"}))
_NO_FUNCTIONS = _unsupported("the deprecated functions API: send tools and tool_choice instead")


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool = False
    response_format: Annotated[dict[str, Any] | None, _TEXT_ONLY] = None
    tools: Annotated[list[ToolSpec], Field(max_length=MAX_TOOLS)] | None = Field(
        None, description="Function tools the model may call; the client runs them and sends results back."
    )
    tool_choice: Annotated[Text, AfterValidator(_tool_choice)] | NamedToolChoice | None = Field(
        None, description="auto (default with tools), none, or a function to offer alone."
    )
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[Any] | None, _NO_FUNCTIONS] = None
    function_call: Annotated[Text | dict[str, Any] | None, _NO_FUNCTIONS] = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.max_tokens == 0:
            raise ValueError("max_tokens must be >= 1 for chat")
        return self


class ScoreRequest(Body):
    partials: Annotated[list[Text], Field(min_length=1)] = Field(description="Partial solutions to score.")
    prompt: Text | None = Field(None, description="The prompt of every partial (or give prompts).")
    prompts: Annotated[list[Text], Field(min_length=1)] | None = Field(None, description="One prompt per partial.")
    scorer: NonEmpty | None = Field(None, description="A loaded scorer (default: the first).")
    model: Text | None = None

    @model_validator(mode="after")
    def _prompts(self):
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give prompt (a string) or prompts (one per partial), not both")
        if self.prompts is not None and len(self.prompts) != len(self.partials):
            raise ValueError(f"prompts must hold one prompt per partial ({len(self.prompts)} for {len(self.partials)})")
        return self

    def pairs(self) -> tuple[list[str], list[str]]:
        return (self.prompts or [self.prompt or ""] * len(self.partials)), self.partials


class ImageScalingSpec(Body):
    """The ``scaling`` field of an image request: a ``steerable diffuse`` method over the diffusion model."""

    method: NonEmpty = Field(description="bon, fk, fk-max, fk-sum, fk-sample, dts, dts-star, dps or fk-dps.")
    budget: Annotated[int, Field(ge=1, le=4096)] = Field(
        4, description="Samples, particles or rollouts per image: at most budget x steps denoiser evaluations."
    )
    guidance_scale: Annotated[Finite, Field(ge=0.0, le=1e4)] | None = Field(
        None, description="dps / fk-dps only: lambda of the reward-gradient guidance (default 1)."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The strategy's fields, e.g. {'lam': 5}.")


class ImageRequest(Body):
    """``POST /v1/images/generations``: OpenAI's images body, b64_json PNGs, with ``scaling`` and ``seed``."""

    # the pattern is documentation for clients and fuzzers (builtin:digits is the one world served); the route
    # checks the prompt against the served world, with a message that says what a prompt must be
    prompt: Annotated[NonEmpty, Field(max_length=1000)] = Field(
        description="The condition; for builtin:digits the target digit, '0' .. '9'.",
        json_schema_extra={"pattern": r"^\s*[0-9]\s*$"},
    )
    model: Text | None = None
    n: Annotated[int, Field(ge=1, le=4096)] = Field(1, description="Images, each its own steered run.")
    size: Annotated[Text, Field(pattern=r"^[0-9]{1,5}x[0-9]{1,5}$")] | None = Field(
        None, description="WxH: the model's own size (8x8 for digits) or a square multiple of it up to 256x256."
    )
    response_format: Annotated[Text | None, _unsupported("images come inline: send b64_json", (None, "b64_json"))] = (
        None
    )
    output_format: Annotated[Text | None, _unsupported("PNG only: leave it out or send png", (None, "png"))] = None
    quality: Annotated[Text | None, _unsupported("leave it out or send auto", (None, "auto", "standard"))] = None
    background: Annotated[Text | None, _unsupported("leave it out or send auto", (None, "auto", "opaque"))] = None
    style: Annotated[Text | None, _unsupported("leave it out")] = None
    output_compression: Annotated[int | None, _unsupported("PNG is lossless: leave it out")] = None
    moderation: Annotated[Text | None, _unsupported("leave it out", (None, "auto"))] = None
    stream: bool | None = Field(
        None,
        description="Server-sent events: every step's particles as PNG previews, scores and resampling, then the "
        "response object, then [DONE].",
    )
    partial_images: Annotated[int | None, _unsupported("leave it out or send 0", (None, 0))] = None
    seed: Annotated[int, Field(ge=0, lt=1 << 53)] | None = Field(
        None, description="Image i is `steerable diffuse sample --seed SEED+i`'s run (default: drawn, and returned)."
    )
    scaling: ImageScalingSpec | None = Field(None, description="Default: FK steering with 4 particles.")
    user: Text | None = Field(None, description="An end-user id; recorded nowhere.")


#: every field name of the bodies: a location part that is none of these is a union member's tag
FIELD_NAMES = (
    frozenset(
        name
        for model in (
            SteeringSpec,
            ScalingSpec,
            StreamOptions,
            CompletionRequest,
            ContentPart,
            SystemMessage,
            UserMessage,
            AssistantMessage,
            ToolMessage,
            ToolSpec,
            FunctionSpec,
            ToolCall,
            FunctionCall,
            NamedToolChoice,
        )  # fmt: skip
        for name in model.model_fields
    )
    | frozenset(ChatCompletionRequest.model_fields)
    | frozenset(ScoreRequest.model_fields)
    | frozenset(ImageScalingSpec.model_fields)
    | frozenset(ImageRequest.model_fields)
)
