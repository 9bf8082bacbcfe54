"""The Starlette app: the page, its static files and the JSON API.

    GET  /                      the page (static/index.html)
    GET  /api/info              models, banner, tasks, limits
    GET  /api/status            the start-up warm-up: {"ready", "done", "total", "step", ...}
    GET  /api/images            the images the page can pick
    GET  /api/images/{id}       one image as PNG (exactly the pixels the models see)
    POST /api/embed             JSON {"image_id"} or an image file as the body -> embedded
                                by every model, {"image_id", "width", "height", ...}
    POST /api/predict           JSON prompts (see prompts.py) -> every model's mask and score

Every answer is one of the shapes declared in `answers.py`. Every failure answers
`{"error": "..."}` with a 4xx status naming the problem (a bug of ours: a JSON 500); the
server keeps serving. The models' work (masks encoded included) runs in Starlette's thread
pool, so a slow request does not hold up the others.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sum_jax.serve.answers import (
    EmbedAnswer,
    ErrorAnswer,
    ImagesAnswer,
    InfoAnswer,
    ModelAnswer,
    PredictAnswer,
    StatusAnswer,
)
from sum_jax.serve.errors import ApiError
from sum_jax.serve.images import Catalogue
from sum_jax.serve.prompts import (
    EMBED_FIELDS,
    MASK_FORMATS,
    TASK_NAMES,
    TASKS,
    Prompts,
    check_fields,
    check_on_image,
    encode_mask,
    parse_image_id,
    parse_models,
    parse_prompts,
)
from sum_jax.serve.sessions import DISPLAY_SIDE, ModelSession, Warmup, mask_geometry

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 1 << 20  # a predict body with 64 points is a few KB


def _ms(value: float) -> float:
    return round(value, 2)


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{what} is {int(declared) / 2**20:.1f} MB; the limit is "
                       f"{limit / 2**20:.0f} MB")  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{what} is over the limit of {limit / 2**20:.0f} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: Request) -> Any:
    body = await _read_body(request, MAX_JSON_BYTES, "the JSON body")
    try:
        return json.loads(body)
    except RecursionError as e:  # e.g. 100,000 nested lists
        raise ApiError(400, "the JSON body is nested too deeply to be a request") from e
    except ValueError as e:  # JSONDecodeError, bad UTF-8, an integer of 5,000 digits
        raise ApiError(400, f"the request body is not valid JSON: {e}") from e


def _model_answer(session: ModelSession, prompts: Prompts, image) -> ModelAnswer:
    """One model's masks for `prompts`, encoded; `ms` covers the decoder and the encoding."""
    start = time.perf_counter()
    try:
        p = session.predict(
            prompts.image_id, image, prompts.points, prompts.labels, prompts.box,
            multimask=prompts.multimask, task=TASKS[prompts.task],
            max_mask_side=prompts.max_mask_side,
        )  # fmt: skip
    except ValueError as e:  # the predictor's own checks, e.g. a task it lacks
        raise ApiError(400, f"model {session.name}: {e}") from e
    encoded = [encode_mask(m, prompts.mask_format) for m in p.masks]
    answer: ModelAnswer = {
        "mask": encoded[p.best],
        "score": float(p.scores[p.best]),
        "best": p.best,
        "ms": 0.0,
        "embed_ms": _ms(p.embed_ms),
        "task_used": TASK_NAMES.get(p.task_used, str(p.task_used)),
    }
    if p.task_note:
        answer["task_note"] = p.task_note
    if prompts.multimask:
        answer["candidates"] = [{"mask": m, "score": float(s)} for m, s in zip(encoded, p.scores)]
    answer["ms"] = _ms((time.perf_counter() - start) * 1e3 - p.embed_ms)
    return answer


def create_app(
    sessions: list[ModelSession],
    catalogue: Catalogue,
    banner: str | None = None,
    warmup: Warmup | None = None,
) -> Starlette:
    """The web app over already loaded models and images. `banner`: a warning the page shows
    above everything (set for randomly initialised models); `warmup`: the start-up
    compilation running in the background, whose progress the page shows (None: none)."""
    by_name = {s.name: s for s in sessions}

    def pick_models(names: list[str] | None) -> list[ModelSession]:
        if names is None:
            return sessions
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ApiError(404, f"unknown model(s) {unknown}; this server has {list(by_name)}")
        return [by_name[n] for n in names]

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def info(request: Request) -> Response:
        answer: InfoAnswer = {
            "models": [
                {
                    "name": s.name,
                    "img_size": s.config.img_size,
                    "encoder_embed_dim": s.config.encoder_embed_dim,
                    "num_tasks": s.config.num_tasks,
                }
                for s in sessions
            ],
            "banner": banner,
            "tasks": list(TASKS),
            "mask_formats": list(MASK_FORMATS),
            "display_mask_side": DISPLAY_SIDE,
            "limits": {
                "max_side": catalogue.limits.max_side,
                "max_bytes": catalogue.limits.max_bytes,
            },
        }
        return JSONResponse(answer)

    async def status(request: Request) -> Response:
        answer: StatusAnswer = {"ready": True, "done": 0, "total": 0, "step": "",
                                "seconds": 0.0, "error": None}  # fmt: skip
        return JSONResponse(answer if warmup is None else warmup.status())

    async def images(request: Request) -> Response:
        answer: ImagesAnswer = {"images": catalogue.list()}
        return JSONResponse(answer)

    async def image_png(request: Request) -> Response:
        data = await run_in_threadpool(catalogue.png, request.path_params["image_id"])
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    async def embed(request: Request) -> Response:
        """JSON `{"image_id", "models"?}`, or an image file as the body (any non-JSON content
        type; `?name=` labels it): the image is added and embedded by every model."""
        if request.headers.get("content-type", "").startswith("application/json"):
            body = check_fields(await _read_json(request), EMBED_FIELDS)
            entry = catalogue.info(parse_image_id(body))
            models = pick_models(parse_models(body.get("models")))
        else:
            data = await _read_body(request, catalogue.limits.max_bytes, "the upload")
            if data[:1] == b"{":
                raise ApiError(
                    415,
                    f"the body looks like JSON but its Content-Type is "
                    f"{request.headers.get('content-type')!r}: send JSON as application/json "
                    "(curl --json), or an image file as the body",
                )
            name = request.query_params.get("name", "upload")
            entry = await run_in_threadpool(catalogue.upload, data, name)
            models = sessions
        image = await run_in_threadpool(catalogue.array, entry["id"])
        start = time.perf_counter()
        spent = {}
        for session in models:
            spent[session.name] = {"embed_ms": _ms(await run_in_threadpool(
                session.embed, entry["id"], image))}  # fmt: skip
        answer: EmbedAnswer = {
            "image_id": entry["id"],
            "name": entry["name"],
            "width": entry["width"],
            "height": entry["height"],
            "models": spent,
            "ms": _ms((time.perf_counter() - start) * 1e3),
        }
        return JSONResponse(answer)

    async def predict(request: Request) -> Response:
        body = await _read_json(request)
        prompts = parse_prompts(body)
        entry = catalogue.info(prompts.image_id)
        check_on_image(prompts, entry["width"], entry["height"])
        models = pick_models(prompts.models)
        image = await run_in_threadpool(catalogue.array, prompts.image_id)
        (mask_h, mask_w), _ = mask_geometry(entry["height"], entry["width"],
                                            prompts.max_mask_side)  # fmt: skip
        start = time.perf_counter()
        answers = {}
        for session in models:
            answers[session.name] = await run_in_threadpool(_model_answer, session, prompts, image)
        answer: PredictAnswer = {
            "image_id": prompts.image_id,
            "width": entry["width"],
            "height": entry["height"],
            "mask_width": mask_w,
            "mask_height": mask_h,
            "task": prompts.task,
            "multimask": prompts.multimask,
            "models": answers,
            "ms": _ms((time.perf_counter() - start) * 1e3),
        }
        return JSONResponse(answer)

    async def api_error(request: Request, exc: ApiError) -> Response:
        error: ErrorAnswer = {"error": exc.message}
        return JSONResponse(error, status_code=exc.status)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the server log has the details"},
            status_code=500,
        )

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail
        if exc.status_code == 404:
            message = f"no such page or endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/status", status),
        Route("/api/images", images),
        Route("/api/images/{image_id:path}", image_png),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/predict", predict, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
