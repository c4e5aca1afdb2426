"""``POST /v1/images/generations`` on a built-in diffusion world: ``steerable serve --model builtin:digits``.

OpenAI's images shape, ``{"prompt", "n", "size", "response_format": "b64_json"}`` in and
``{"created", "data": [{"b64_json": PNG}]}`` out, with the completions server's extra bodies where they mean
something here:

- ``prompt`` is the condition: for builtin:digits the target digit, ``"0"`` .. ``"9"`` (anything else is a
  400 naming ``prompt``). The digits denoiser is unconditional, so only steering makes an image follow its
  prompt: a request without ``scaling`` runs FK steering with 4 particles (the FK paper's default; fewer
  where the server's ``--max-request-nfe`` or budget cap leave fewer);
  ``{"method": "bon", "budget": 1}`` is a plain, unsteered sample.
- ``scaling``: ``{"method", "budget", "guidance_scale", "options"}``, any ``steerable diffuse`` method; its
  options are the strategy's declared fields, checked against their types and bounds
  (:func:`steerable.diffusion.registry.make_strategy`), as the completions server checks its strategies'.
- ``seed``: image i is the run ``steerable diffuse sample --seed SEED+i`` makes (default: drawn at random and
  returned in the ``steerable`` field, so any answer can be reproduced).
- ``steerable`` in the response: per image the judge's verdict (the independent SVC), the reward, the NFE and
  reward calls it cost and the strategy's diagnostics (FK's resampling steps, DTS's expansions).

``"stream": true`` (OpenAI's images API names its streaming ``stream`` too) answers with server-sent events:
one ``{"object": "steerable.event", "event": E}`` per call the strategy makes on its process and reward
(:mod:`steerable.search.watch`: ``init``, ``step`` with a PNG data URL per particle, ``score``, ``select``,
``concat``), a ``candidates`` event per image (every final particle with its reward and the judge's verdict),
then the same response object the request gets without ``stream``, then ``[DONE]``. OpenAI streams
``image_generation.partial_image`` events instead; ours are the playground's (see ``docs/differences.md``).
A step's previews cost no denoiser evaluation (:class:`DiffusionShow`), so a streamed run's cost is the
non-streamed one.

Compute is bounded per request: every method spends at most budget x steps denoiser evaluations per image,
so ``n x budget x steps`` over ``--max-request-nfe`` is refused up front, and a guard inside the process
stops a run that would pass it (and stops it at once when the client leaves). The work runs as jobs on the
engine's worker thread, one request at a time, never on the event loop: ``/health`` answers while images are
being made. The route, the gate (API key, body limit, metrics) and the error bodies are the completions
server's.
"""

from __future__ import annotations

import base64
import random
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import Request
from fastapi.responses import Response

from steerable.diffusion.process import DiffusionProcess
from steerable.errors import ConfigError, InputError, SteerableError
from steerable.serve.engine import Engine, Job
from steerable.serve.gate import Metrics
from steerable.serve.openai import APIError, json_safe
from steerable.serve.routes import CLIENT_GONE, ClientGone, WorldRoutes, stream_run, submit, wait
from steerable.serve.scaling import Cancelled
from steerable.serve.schemas import ImageRequest, ImageScalingSpec

#: a request without ``scaling``: FK steering, the paper's 4 particles
DEFAULT_SCALING = ImageScalingSpec(method="fk", budget=4)
#: DDIM steps and eta of every served run (eta 1: SMC and tree search need a stochastic sampler)
STEPS, ETA = 50, 1.0
#: the largest side a PNG may be scaled up to (nearest neighbour)
MAX_SIDE = 256
ROUTE = "/v1/images/generations"


@dataclass
class NFEGuard:
    """Stops a run when its client has left, or before a denoiser call would pass the request's NFE cap."""

    cap: int
    used: int = 0
    cancelled: bool = False

    def charge(self, rows: int) -> None:
        if self.cancelled:
            raise Cancelled("the client closed the connection")
        if self.used + rows > self.cap:
            raise APIError(
                400,
                f"the run needed more than the server's --max-request-nfe of {self.cap} denoiser evaluations "
                f"({self.used} spent): lower n or scaling.budget",
                "scaling.budget",
                "request_too_large",
            )
        self.used += rows


@dataclass
class GuardedDiffusion(DiffusionProcess):
    """A diffusion process that asks its guard before every denoiser call."""

    guard: NFEGuard = field(default_factory=lambda: NFEGuard(0))

    def model_output(self, state, rows: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        self.guard.charge(len(rows))
        return super().model_output(state, rows, x)


def grey(samples: torch.Tensor) -> np.ndarray:
    """``[rows, 8, 8]`` uint8 grey levels of digits samples ``[rows, 64]`` in [-1, 1]: dark ink on white (as the
    README's figures), (1 - x) / 2 * 255."""
    grid = samples.detach().float().reshape(-1, 8, 8).clamp(-1, 1)
    return ((1 - grid) / 2 * 255).round().to(torch.uint8).cpu().numpy()


def encode_png(pixels: np.ndarray) -> str:
    """A ``[h, w]`` uint8 grey image as a base64 PNG (8-bit greyscale, no filter): zlib and two CRCs, a few
    microseconds, where PIL's encoder took about 0.25 ms per 8x8 image, which a streamed run pays per particle
    and step."""
    h, w = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))  # filter type 0 before every scanline

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    head = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # bit depth 8, colour type 0 (grey), no interlace
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return base64.b64encode(data).decode("ascii")


def png(sample: torch.Tensor, side: int) -> str:
    """A digits sample ``[64]`` in [-1, 1] as a base64 PNG, ``side`` pixels square (nearest-neighbour upscaling
    of the 8x8 grid)."""
    k = side // 8
    return encode_png(grey(sample)[0].repeat(k, axis=0).repeat(k, axis=1))


def data_url(sample: torch.Tensor) -> str:
    """A digits sample as an 8x8 PNG data URL (about 150 bytes: a page scales it up, pixelated); the same PNG as
    the response's ``b64_json`` at the default size."""
    return "data:image/png;base64," + png(sample, 8)


class DiffusionShow:
    """:class:`~steerable.search.watch.Watch`'s ``show`` for a diffusion process: no model call, ever.

    Each row shows what the state already holds, and :attr:`of` says which (``preview_of`` in the step event):
    ``"sample"`` for a done row (its x0), ``"x0"`` for the x0-prediction at the row's current x when a preview
    already computed it, ``"last_step_x0"`` for the x0-prediction the row's last denoising step made (at the x
    before that step: after a ``propose`` this is what every live row shows), ``"x"`` for the current x of a
    row no model call has seen yet. :meth:`DiffusionProcess.preview` would instead spend an NFE on every stale
    row, which a plain run spends only where its strategy asks for it.
    """

    def __init__(self) -> None:
        self.of: list[str] = []
        self.index: list[int] = []

    def __call__(self, process: DiffusionProcess, state) -> list[str]:
        done = (state.index >= process.num_steps).tolist()
        fresh, index = state.fresh.tolist(), state.index.tolist()
        self.index = index
        self.of = [
            "sample" if d else "x0" if f else "last_step_x0" if i > 0 else "x"
            for d, f, i in zip(done, fresh, index, strict=True)
        ]
        use_x0 = torch.tensor([k in ("x0", "last_step_x0") for k in self.of], device=state.x.device)
        pixels = grey(torch.where(use_x0[:, None], state.x0.reshape(len(use_x0), -1), state.x.reshape(len(use_x0), -1)))
        return ["data:image/png;base64," + encode_png(p) for p in pixels]


@dataclass
class ImageRun:
    """One request's work, checked by the route before it is queued: ``n`` runs of ``strategy``."""

    world: Any
    strategy: Any
    guidance: Any
    prompt: str
    n: int
    budget: int
    seed: int
    side: int
    guard: NFEGuard
    spec: ImageScalingSpec
    sink: Callable[[dict], None] | None = None  # a streamed run's events go here (from the engine's thread)

    def __call__(self) -> list[dict]:
        from steerable.diffusion.digits import judge

        world = self.world
        process = GuardedDiffusion(
            world.denoiser, world.scheduler, num_steps=STEPS, eta=ETA, guidance=self.guidance, guard=self.guard
        )
        images = []
        for i in range(self.n):
            t0, backward = time.perf_counter(), process.backward_passes
            proc, reward = (process, world.reward) if self.sink is None else self.watched(process, i)
            res = self.strategy.run(proc, reward, self.budget, self.prompt, seed=self.seed + i)
            if self.sink is not None:
                self.sink(self.candidates(res, i))
            answer = judge().answer(res.sample)
            images.append(
                {
                    "b64_json": png(res.sample, self.side),
                    "answer": answer,
                    "success": answer == self.prompt,
                    "reward": world.reward.score([self.prompt], res.sample[None])[0],
                    "nfe": res.cost.nfe,
                    "backward_passes": process.backward_passes - backward,
                    "reward_calls": res.cost.scorer_calls,
                    "seconds": round(time.perf_counter() - t0, 4),
                    "info": {k: v for k, v in res.info.items() if k != "ess"},
                }
            )
        return images

    def watched(self, process: DiffusionProcess, image: int):
        """``process`` and the reward wrapped to report every call to :attr:`sink`, tagged with the image."""
        from steerable.search.watch import Watch

        show = DiffusionShow()

        def emit(event: dict) -> None:
            if self.guard.cancelled:  # the client left: stop between model calls too
                raise Cancelled("the client closed the connection")
            if event["type"] == "step":
                event.update(preview_of=show.of, index=show.index)
            assert self.sink is not None
            self.sink(json_safe({**event, "image": image}))

        watch = Watch(emit, show)
        return watch.process(process), watch.scorer(self.world.reward)

    def candidates(self, res, image: int) -> dict:
        """Every final particle with its reward, weight and the judge's verdict; the run's diagnostics (FK's ESS
        at each weighing included)."""
        from steerable.diffusion.digits import judge

        samples = torch.stack([torch.as_tensor(c.sample) for c in res.candidates])
        answers = judge().predict(samples)
        cands = [
            {"preview": data_url(c.sample), "reward": c.score, "weight": c.weight, "answer": str(a),
             "success": str(a) == self.prompt}
            for c, a in zip(res.candidates, answers, strict=True)
        ]  # fmt: skip
        return json_safe({"type": "candidates", "image": image, "candidates": cands, "info": dict(res.info)})


class ImageRoutes(WorldRoutes):
    """The images server's handlers, bound to one world and one server configuration."""

    async def models(self) -> dict:
        from steerable.diffusion.registry import METHODS

        entry = {
            "id": self.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "steerable",
            "kind": "diffusion",
            "size": "8x8",
            "steps": STEPS,
            "methods": sorted(METHODS),
        }
        return {"object": "list", "data": [entry]}

    async def generations(self, body: ImageRequest, request: Request):
        run = self.prepare(body)
        job = Job(run, None)  # type: ignore[arg-type]
        if body.stream:
            run.sink = lambda event: job.emit("event", event)  # job.emit: the loop's call_soon_threadsafe
        q = submit(self.engine, job)
        if body.stream:

            def left() -> None:  # the run stops at its next model call or event
                job.cancelled = run.guard.cancelled = True
                self.metrics.cancelled.labels(ROUTE).inc()

            return stream_run(q, lambda images: self.response(run, images), left)
        try:
            images = await wait(q, request)
        except ClientGone:
            job.cancelled = run.guard.cancelled = True
            self.metrics.cancelled.labels(ROUTE).inc()
            return Response(status_code=CLIENT_GONE)
        return self.response(run, images)

    def response(self, run: ImageRun, images: list[dict]) -> dict:
        spec = run.spec
        return {
            "created": int(time.time()),
            "data": [{"b64_json": im["b64_json"], "revised_prompt": None} for im in images],
            "output_format": "png",
            "size": f"{run.side}x{run.side}",
            "steerable": json_safe(
                {
                    "method": spec.method,
                    "budget": spec.budget,
                    "seed": run.seed,
                    "images": [{k: v for k, v in im.items() if k != "b64_json"} for im in images],
                    "cost": {
                        "nfe": sum(im["nfe"] for im in images),
                        "backward_passes": sum(im["backward_passes"] for im in images),
                        "reward_calls": sum(im["reward_calls"] for im in images),
                        "seconds": round(sum(im["seconds"] for im in images), 4),
                    },
                }
            ),
        }

    def prepare(self, body: ImageRequest) -> ImageRun:
        """The request's run, with every server-side limit checked (a 4xx naming the field)."""
        from steerable.diffusion.digits import judge, parse_target
        from steerable.diffusion.guidance import RewardGuidance
        from steerable.diffusion.registry import make_strategy, method

        cfg = self.config
        if body.model is not None and body.model != cfg.model_name:
            raise APIError(
                404, f"model {body.model!r} is not served here: use {cfg.model_name}", "model", "model_not_found"
            )
        try:
            parse_target(body.prompt)
        except InputError as e:
            raise APIError(400, f"prompt: {e}: {cfg.model_name} draws the digit its prompt names", "prompt") from None
        if body.n > cfg.max_n:
            raise APIError(400, f"n must be <= {cfg.max_n}, the server's --max-n (got {body.n})", "n")
        side = self.side(body.size)
        spec = body.scaling or self.default_scaling(body.n)
        if spec.budget > cfg.max_budget:
            raise APIError(400, f"scaling.budget must be <= {cfg.max_budget} (got {spec.budget})", "scaling.budget")
        try:
            meta = method(spec.method)
        except ConfigError as e:
            raise APIError(400, f"scaling.method: {e}", "scaling.method") from None
        try:
            strategy = make_strategy(spec.method, judge().answer, spec.options)
        except SteerableError as e:
            raise APIError(400, f"scaling.options: {e}", "scaling.options") from None
        if spec.guidance_scale is not None and not meta.guided:
            raise APIError(
                400, f"scaling.guidance_scale applies to dps and fk-dps, not {spec.method}: leave it out",
                "scaling.guidance_scale",
            )  # fmt: skip
        worst = body.n * spec.budget * STEPS
        if worst > cfg.max_request_nfe:
            raise APIError(
                400,
                f"n x scaling.budget x {STEPS} steps is {worst} denoiser evaluations, over the server's "
                f"--max-request-nfe of {cfg.max_request_nfe}: lower n or scaling.budget",
                "scaling.budget",
                "request_too_large",
            )
        guidance = None
        if meta.guided:
            scale = 1.0 if spec.guidance_scale is None else spec.guidance_scale
            guidance = RewardGuidance(self.world.reward, scale=scale)
        seed = body.seed if body.seed is not None else random.getrandbits(52)
        return ImageRun(
            self.world, strategy, guidance, body.prompt.strip(), body.n, spec.budget, seed, side,
            NFEGuard(cfg.max_request_nfe), spec,
        )  # fmt: skip

    def playground(self) -> dict:
        """The Diffusion tab's choices (``GET /v1/playground``'s ``diffusion`` key): every method with its default
        budget (the request default's particles; the tab's "best-of-N vs FK" runs both at it), the targets, the
        NFE one particle costs and the largest budget one image may have here."""
        from steerable.diffusion.registry import METHODS, method

        cfg, default = self.config, self.default_scaling(1).budget
        methods = []
        for name in METHODS:
            entry, meta = METHODS.entry(name), method(name)
            methods.append(
                {"name": name, "summary": entry.summary, "budget": entry.budget, "default_budget": default,
                 "guided": meta.guided, "sampler": meta.sampler}
            )  # fmt: skip
        return {
            "methods": methods,
            "default": {"method": DEFAULT_SCALING.method, "budget": default},
            "targets": [str(d) for d in range(10)],
            "steps": STEPS,
            "nfe_per_particle": STEPS,
            "max_budget": max(1, min(cfg.max_budget, cfg.max_request_nfe // STEPS)),
            "size": "8x8",
        }

    def default_scaling(self, n: int) -> ImageScalingSpec:
        """FK with the paper's 4 particles, or as many as the server's budget and NFE caps leave for ``n`` images
        (at least 1: a request that cannot afford one particle is refused by the NFE check)."""
        cfg = self.config
        budget = max(1, min(DEFAULT_SCALING.budget, cfg.max_budget, cfg.max_request_nfe // (n * STEPS)))
        return DEFAULT_SCALING.model_copy(update={"budget": budget})

    @staticmethod
    def side(size: str | None) -> int:
        """The PNG's side: 8 (the model's own) or a square multiple of it up to :data:`MAX_SIDE`."""
        if size is None:
            return 8
        w, h = (int(v) for v in size.split("x"))
        if w != h or w % 8 or not 8 <= w <= MAX_SIDE:
            raise APIError(
                400, f"size must be 8x8 or a square multiple of it up to {MAX_SIDE}x{MAX_SIDE} (got {size})", "size"
            )
        return w


def create_images_app(world, config):
    """The images server: an engine of jobs only, the shared gate and error handling, and the image routes."""
    from steerable.diffusion.digits import judge
    from steerable.serve.app import base_app

    if world.name != "digits":
        raise ConfigError(
            f"builtin:{world.name} samples 2-D points, not images: serve builtin:digits "
            "(steer the mixture with steerable diffuse)"
        )
    judge()  # fitted once, here, not inside the first request
    metrics = Metrics()
    engine = Engine(None)
    app = base_app(engine, config, metrics)
    routes = ImageRoutes(engine, world, config, metrics)
    app.get("/health")(routes.health)
    app.get("/metrics")(routes.metrics_text)
    app.get("/v1/models")(routes.models)
    app.post(ROUTE)(routes.generations)
    from steerable.serve.playground import images_info, mount

    mount(app, config, ["diffusion"], {**images_info(config), "diffusion": routes.playground()})
    return engine, app
