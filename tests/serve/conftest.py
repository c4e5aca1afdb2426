"""Fixtures of the server tests: the built-in model behind a real uvicorn server on a free port."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from steerable.lm.local import LocalGenerator  # noqa: E402

PROMPT = "Q: 37+48-19=\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, app):
        self.port = _free_port()
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
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def local():
    return LocalGenerator.from_pretrained("builtin", device="cpu")


@pytest.fixture(scope="session")
def serve_app():
    """Start an app on a free port: ``s = serve_app(app); s.url; s.close()``."""
    return _Server
