"""A process reward model behind a server's ``POST /v1/score``."""

from __future__ import annotations

from collections.abc import Sequence

from steerable.lm.http import HTTPClient


class HTTPScorer:
    """A PRM behind ``POST /v1/score`` (``steerable serve --prm ...``)."""

    range = (0.0, 1.0)

    def __init__(self, client: HTTPClient, name: str | None = None):
        self.client, self.name = client, name
        self.calls = 0
        self.forward_tokens = 0

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        if not prompts:  # a search step where every particle had finished: nothing to ask (the server refuses [])
            return []
        self.calls += 1
        body = {"prompts": list(prompts), "partials": list(partials)}
        if self.name:
            body["scorer"] = self.name
        out = self.client.post("/score", body)
        self.forward_tokens += int((out.get("usage") or {}).get("scorer_tokens", 0))
        return [float(s) for s in out["scores"]]
