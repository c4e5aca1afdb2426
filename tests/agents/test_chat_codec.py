"""The agent world on a chat model: tool calls read from its text, results written as its template renders them."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from steerable.agents.chat import ChatCodec, parse_tool_calls
from steerable.agents.process import AgentProcess, episode
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams, StepOutput
from steerable.tasks.agent.envs import make_env

TASK = {"env": "calculator", "expression": "37*48+19"}
CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "37*48"}}</tool_call>'


def test_tool_calls_are_read_in_hermes_tags_or_as_bare_json():
    assert parse_tool_calls("I will compute. " + CALL) == ("I will compute.", [("calculator", {"expression": "37*48"})])
    two = CALL + "\n" + CALL.replace("37*48", "1776+19")
    assert [a for _, a in parse_tool_calls(two)[1]] == [{"expression": "37*48"}, {"expression": "1776+19"}]
    assert parse_tool_calls('{"name": "get", "parameters": {"key": "k3"}}') == ("", [("get", {"key": "k3"})])
    for text in ("<tool_call>{not json}</tool_call>", '<tool_call>["x"]</tool_call>', "A: 42", '{"a": 1}'):
        assert parse_tool_calls(text) == (text, [])  # no call: all of it is content


def test_the_codec_offers_the_tool_and_writes_the_template_s_tool_message(hermes_tokenizer):
    env = make_env("calculator")
    codec = ChatCodec(hermes_tokenizer, env)
    prompt = codec.prompt(env, env.reset(TASK))
    assert '"name": "calculator"' in prompt and "Q: 37*48+19=" in prompt and "[calc]" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert codec.lines("Let me see. " + CALL, final=False) == [">>> 37*48"]
    assert codec.lines("A: 1795", final=True) == ["A: 1795"]
    assert codec.lines('<tool_call>{"name": "weather", "arguments": {}}</tool_call>', final=False) == []
    obs = codec.observation(env, ">>> 37*48", "= 1776")
    # what the template writes after a call: the end of the assistant's turn, the tool message, a new turn
    assert obs == "<|im_end|><|im_start|>tool\n<tool_response>1776</tool_response><|im_end|><|im_start|>assistant\n"


class Scripted(LocalGenerator):
    """A random chat model whose next pieces are forced (it would never call a tool by itself)."""

    script: list[str]

    def step(self, seqs, params, stop=None, max_tokens=None, rows=None, top=0):
        text = self.script.pop(0)
        self.append(seqs, [text])
        ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return StepOutput((text,), (ids,), ((0.0,) * len(ids),), ("stop",), self.usage)


def test_a_process_turn_on_a_chat_model_calls_the_tool_and_reads_the_answer(hermes_tokenizer):
    torch.manual_seed(0)
    config = tiny_config("qwen2", len(hermes_tokenizer))
    config.max_position_embeddings = 2048  # the template's tool listing is ~600 characters
    from transformers import AutoModelForCausalLM

    gen = Scripted(AutoModelForCausalLM.from_config(config).eval(), hermes_tokenizer)
    gen.script = ["Step one. " + CALL, "A: 1795"]
    env = make_env("calculator")
    proc = AgentProcess(gen, SamplingParams(temperature=0), codec=ChatCodec(hermes_tokenizer, env))
    ep = episode(TASK, codec=proc.codec)
    state = proc.init(ep, n=1)
    proc.propose(state)
    assert state.envs[0].steps == 1 and state.actions[0] == [">>> 37*48"]
    text = hermes_tokenizer.decode(state.seqs.token_ids[0], skip_special_tokens=True)
    assert text.endswith(CALL + "<|im_end|><|im_start|>tool\n<tool_response>1776</tool_response><|im_end|>"
                         "<|im_start|>assistant\n")  # fmt: skip
    assert proc.usage.tool_calls == 1
    proc.propose(state)
    assert proc.is_terminal(state) == [True] and proc.solved(state) == [True]
    # the real model runs over the appended context (the observation's tokens are fed, not skipped)
    out = LocalGenerator.step(gen, state.seqs, SamplingParams(temperature=0), max_tokens=2)
    assert len(out.token_ids[0]) == 2


def test_a_tokenizer_without_a_template_is_refused(char_tokenizer):
    with pytest.raises(Exception, match="chat template"):
        ChatCodec(char_tokenizer, make_env("calculator"))
