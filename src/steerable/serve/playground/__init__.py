"""The playground: a static page served beside the API (``GET /playground``; extra ``[playground]``).

The page is plain HTML and a little JavaScript with Plotly.js for the charts, read from the ``plotly`` package's
own bundled file, so there is no build step and no CDN. It calls the very endpoints a client calls, with the
client's API key, so every limit of the server (``--max-request-tokens``, ``--max-request-nfe``, ``--max-budget``,
the key, the body limit) holds for it by construction.

Routes (added by :func:`mount`):

- ``GET /playground``: the page; ``GET /playground/static/{name}``: its files and ``plotly.min.js``. Both are
  public, like ``/health`` (the gate lets them through): they hold no data, only code.
- ``GET /v1/playground``: what the page shows for this server (behind the key like every ``/v1`` route): the
  model, its families (one tab each), the steering artifacts, the methods and the limits.

Without plotly, ``GET /playground`` answers 404 with :data:`PLOTLY_MISSING`.

Each server calls :func:`mount` with its own families and info: :func:`lm_info` (``create_app``),
:func:`images_info` (``create_images_app``); a control server builds its info with :func:`base_info` and
``families=["control"]``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"
PLOTLY_MISSING = "the playground needs plotly: pip install 'steerable[playground]'"
#: the page's routes, public like /health (the gate reads this set)
PUBLIC_ROUTES = frozenset({"/playground", "/playground/static/{name}"})
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def plotly_js() -> Path | None:
    """The ``plotly`` package's bundled ``plotly.min.js``, or None when plotly is not installed."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def base_info(config, families: list[str], methods: list[str], steering: list[dict] | None = None) -> dict[str, Any]:
    """``GET /v1/playground``'s body for a server of ``families``: the shape every server shares."""
    return {
        "model": config.model_name,
        "families": list(families),
        "steering": list(steering or []),
        "methods": list(methods),
        "limits": {
            "max_budget": config.max_budget,
            "max_tokens": config.max_tokens,
            "max_request_tokens": config.max_request_tokens,
            "max_request_nfe": config.max_request_nfe,
            "max_request_env_steps": config.max_request_env_steps,
        },
        "key_required": config.api_key is not None,
    }


def steering_entry(name: str, art) -> dict[str, Any]:
    """One loaded artifact as the page lists it: its kind and its default strength (alpha, beta)."""
    kind = type(art).__name__.lower()
    strength: float | None = None
    if kind == "steeringvector":
        kind, strength = ("direction" if art.mode == "ablate" else "vector"), art.strength
    elif kind == "controller":
        strength = art.config.alpha
    elif kind == "rice":
        strength = art.beta
    return {"name": name, "kind": kind, "strength": strength}


def lm_info(engine, config) -> dict[str, Any]:
    """A language model's page: steering and search tabs, every loaded artifact, the search methods."""
    from steerable.search.registry import METHODS

    steering = [steering_entry(name, art) for name, art in sorted(engine.steering.items())]
    info = base_info(config, ["steering", "search"], sorted(METHODS.entries), steering)
    info["scorers"] = list(config.scorers)
    return info


def images_info(config) -> dict[str, Any]:
    """A diffusion model's page: the diffusion tab and every ``steerable diffuse`` method."""
    from steerable.diffusion.registry import METHODS

    return base_info(config, ["diffusion"], sorted(METHODS.entries))


def mount(app, config, families: list[str], info: dict[str, Any]) -> None:
    """Add the page, its files and ``GET /v1/playground`` (answering ``info``) to a server's app."""
    from fastapi.responses import FileResponse

    from steerable.serve.openai import APIError

    files = {p.name for p in STATIC.iterdir() if p.is_file()}
    body = {**info, "families": list(families)}

    def need_plotly() -> Path:
        path = plotly_js()
        if path is None:
            raise APIError(404, PLOTLY_MISSING, None, "playground_unavailable")
        return path

    async def page():
        need_plotly()
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"cache-control": "no-cache"})

    async def static(name: str):
        if name == "plotly.min.js":  # 4.8 MB that change only with the package: the browser keeps it
            return FileResponse(need_plotly(), media_type="text/javascript", headers={"cache-control": "max-age=86400"})
        if name not in files:
            raise APIError(404, f"no playground file {name!r}", None, "not_found")
        media = MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")
        return FileResponse(STATIC / name, media_type=media, headers={"cache-control": "no-cache"})

    async def playground() -> dict:
        return body

    app.get("/playground", include_in_schema=False)(page)
    app.get("/playground/static/{name}", include_in_schema=False)(static)
    app.get("/v1/playground")(playground)
