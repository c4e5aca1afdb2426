import os
import socket
import threading
import time

import pytest
import torch

# One torch thread in tests, whatever the shell says (the Makefile exports OMP_NUM_THREADS=nproc for the CLI):
# the models here are tiny, so more threads only add contention on shared cores, and in-process CLI calls
# (cli/common.py reads OMP_NUM_THREADS) and worker processes inherit the 1 instead of the machine's core count.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

from steerable.tasks.builtin.tokenizer import build_tokenizer  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """A test that raises torch's thread count (a CLI call, a training config's ``threads``) sets it back."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def char_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, char_tokenizer):
    """A tiny random Llama saved with the char tokenizer, as a model directory (RL runs load it by path; read-only)."""
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("llama", char_tokenizer, seed=1).save_pretrained(d)
    char_tokenizer.save_pretrained(d)
    return str(d)


def tiny_config(family: str, vocab_size: int):
    """A random-config model of ``family`` small enough to build in milliseconds."""
    import transformers as T

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    llama_like = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **common,
    )
    if family == "llama":
        return T.LlamaConfig(**llama_like)
    if family == "qwen2":
        return T.Qwen2Config(**llama_like)
    if family == "mistral":
        return T.MistralConfig(sliding_window=None, **llama_like)
    if family == "gemma":
        return T.GemmaConfig(head_dim=8, **llama_like)
    if family == "phi":
        return T.PhiConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            **common,
        )
    if family == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
    if family == "gpt_neox":
        return T.GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            **common,
        )
    if family == "qwen2_moe":
        return T.Qwen2MoeConfig(
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
            **llama_like,
        )
    if family == "mixtral":
        return T.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, sliding_window=None, **llama_like)
    moe = dict(moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, **llama_like)
    if family == "qwen3_moe":  # no shared expert: routing carries the function (builtin:moe's family)
        return T.Qwen3MoeConfig(head_dim=8, norm_topk_prob=True, **moe)
    if family == "olmoe":
        return T.OlmoeConfig(num_experts=4, num_experts_per_tok=2, **llama_like)
    if family == "gpt_oss":  # routes by a softmax over its top-k logits
        return T.GptOssConfig(num_local_experts=4, num_experts_per_tok=2, head_dim=8, **llama_like)
    raise ValueError(family)


FAMILIES = ["llama", "qwen2", "mistral", "gemma", "phi", "gpt2", "gpt_neox", "qwen2_moe", "mixtral"]


def tiny_model(family: str, tokenizer, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer))).eval()


def graded_prm(tokenizer, seed: int = 0):
    """A PRM over a tiny random token classifier: distinct scores for any texts (the built-in PRM scores a tiny
    random policy's text ~0 alike, which gives RL no advantage to move on)."""
    from transformers import AutoModelForTokenClassification

    from steerable.reward.prm import TokenClassifierPRM

    torch.manual_seed(seed)
    conf = tiny_config("llama", len(tokenizer))
    conf.num_labels = 1
    return TokenClassifierPRM(AutoModelForTokenClassification.from_config(conf), tokenizer)


# ---- a served built-in model (tests/serve) ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, app):
        self.port = _free_port()
        uvicorn = pytest.importorskip("uvicorn")
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from steerable.lm.local import LocalGenerator
    from steerable.steer.artifact import SteeringVector, fingerprint

    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    v = torch.randn(gen.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    art = SteeringVector("mean", "add", fingerprint(gen.model, gen.tokenizer), vector=v * 3, layers=(1,))
    return art.save(tmp_path_factory.mktemp("art") / "noise")


@pytest.fixture(scope="module")
def server(artifact):
    from steerable.serve import build

    engine, app = build("builtin", [f"noise={artifact}"], prm="builtin", device="cpu", max_n=16, max_tokens=200)
    s = _Server(app)
    s.engine = engine
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def local():
    from steerable.lm.local import LocalGenerator

    return LocalGenerator.from_pretrained("builtin", device="cpu")


@pytest.fixture(scope="session")
def serve_app():
    """Start an app on a free port: ``s = serve_app(app); s.url; s.close()``."""
    return _Server


# ---- RL runs (tests/rl) ------------------------------------------------------------------------------

_RL_ROWS: dict = {}


@pytest.fixture
def rl_rows_once(monkeypatch):
    """Each ``train_rl`` on a built-in task draws 20,000 training problems (~0.7 s): draw each (task, n, seed)
    once per session. ``rl.session.task_rows`` is a pure function of its arguments; ``train_rl`` edits the rows it
    gets, so every call gets fresh copies of the same rows."""
    import steerable.rl.session as session

    real = session.task_rows

    def once(task: str, n: int, seed: int) -> list[dict]:
        if not task.startswith("builtin:"):  # a file may change between calls
            return real(task, n, seed)
        if (task, n, seed) not in _RL_ROWS:
            _RL_ROWS[task, n, seed] = real(task, n, seed)
        return [dict(r) for r in _RL_ROWS[task, n, seed]]

    monkeypatch.setattr(session, "task_rows", once)


# ---- a chat template with tools (tests/agents, tests/serve) ------------------------------------------

#: a Hermes/Qwen-style template that renders ``tools``, assistant ``tool_calls`` and ``role: tool`` messages
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "# Tools\n<tools>\n{%- for tool in tools %}{{ tool | tojson }}\n{%- endfor %}</tools>\n"
    'Call a tool as <tool_call>{"name": NAME, "arguments": ARGS}</tool_call><|im_end|>\n'
    "{%- elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|im_start|>tool\n<tool_response>{{ m.content }}</tool_response><|im_end|>\n"
    "{%- elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{%- for tc in m.tool_calls or [] %}<tool_call>"
    '{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- elif m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def hermes_tokenizer():
    """The char tokenizer with :data:`HERMES_TEMPLATE` (nothing can be downloaded: no real chat tokenizer)."""
    tok = build_tokenizer()
    tok.chat_template = HERMES_TEMPLATE
    return tok
