"""The HTTP service (FastAPI): the versioned JSON API, health and metrics endpoints, and the web page.

``create_app`` builds the app for loaded models; :mod:`pintopic.serve.server` runs it with uvicorn. Every bad
input gets a 4xx with a ``detail`` saying why; a full queue gets 503 with ``Retry-After``. (No ``from __future__
import annotations`` here: FastAPI must see the route parameters' real types, imported inside the functions.)
"""
import time
from importlib import resources

#: The multipart body of ``POST /v1/models/{name}/predict`` for the OpenAPI page (the body is parsed by hand,
#: within limits, so FastAPI cannot infer it).
PREDICT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["images"],
    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "one or more image files (any field name is accepted)"}}}}}}}

PREDICT_RESPONSES = {
    200: {"description": "per image: top-k categories (or that image's own error status and reason), timing"},
    400: {"description": "malformed multipart body, no image, or an unexpected form field"},
    401: {"description": "missing or invalid API key (when the server has keys)"},
    404: {"description": "no model of that name"},
    413: {"description": "upload over the byte limit, too many files, or (every image) over the pixel limit"},
    415: {"description": "not multipart/form-data, or (every image) an unsupported format"},
    422: {"description": "bad top_k, or no image could be decoded (each image says why)"},
    503: {"description": "the model's queue is full or the model is still warming up; see Retry-After"},
}

#: The page loads only its own files; thumbnails are blob: URLs of the user's own images.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                           "base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def create_app(models: dict, settings, api_keys=None):
    """The FastAPI app serving ``models`` (``{name: ServedModel}``) with ``settings`` (:class:`ServeSettings`);
    with ``api_keys`` (:class:`~pintopic.serve.auth.ApiKeys`) every ``/v1`` call needs a bearer key."""
    from fastapi import APIRouter, Depends, FastAPI
    from fastapi.staticfiles import StaticFiles

    from pintopic import __version__
    from pintopic.serve.auth import bearer_dependency
    from pintopic.serve.metrics import ServiceMetrics
    from pintopic.serve.service import Service

    metrics = ServiceMetrics()
    service = Service(models, settings, metrics)
    app = FastAPI(title="pintopic", version=__version__, lifespan=service.lifespan,
                  description="The most suitable Pinterest category for an uploaded image, from a model a pintopic "
                              "study saved. Without keys only loopback clients can reach it by default.")
    app.state.service = service
    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_dependency(api_keys))], tags=["v1"])
    _add_model_routes(api, service)
    app.include_router(api)
    _add_operational_routes(app, service, metrics)
    static = resources.files("pintopic.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization"])
    app.add_middleware(metrics.middleware)
    return app


def _model(service, name: str):
    from fastapi import HTTPException

    if name not in service.models:
        raise HTTPException(404, f"no model named {name!r}; served: {', '.join(sorted(service.models))}")
    return service.models[name]


def _add_model_routes(api, service) -> None:
    from fastapi import Query, Request

    settings = service.settings

    @api.get("/models", summary="The served models: names, categories, backbones, metrics from their run")
    async def list_models() -> dict:
        return {"models": [model.describe() for model in service.models.values()]}

    @api.get("/models/{name}/results", summary="The model's run: results table, its own row, its confusion matrix")
    async def model_results(name: str) -> dict:
        model = _model(service, name)
        return {"name": name, **model.results}

    @api.post("/models/{name}/predict", summary="Top-k categories for one or more uploaded images",
              openapi_extra=PREDICT_BODY, responses=PREDICT_RESPONSES)
    async def predict(name: str, request: Request,
                      top_k: int = Query(3, ge=1, le=settings.max_top_k, description="categories per image")):
        return await _predict(service, name, request, top_k)


async def _predict(service, name: str, request, top_k: int):
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse

    from pintopic.serve.limits import read_uploads
    from pintopic.serve.service import Overloaded, request_status

    started, settings = time.perf_counter(), service.settings
    model = _model(service, name)
    if not model.ready:
        raise HTTPException(503, f"model {name!r} is not ready ({model.state})", headers=_retry(settings))
    if top_k > len(model.predictor.classes):
        raise HTTPException(422, f"top_k must be between 1 and {len(model.predictor.classes)} (the model's categories)")
    batcher = service.batchers[name]
    if batcher.admitted >= batcher.capacity:  # refuse before reading the body
        service.metrics.rejected.labels(name).inc()
        raise HTTPException(503, f"model {name!r} is busy (queue full); retry shortly", headers=_retry(settings))
    files, fields = await read_uploads(request, max_bytes=settings.max_upload_bytes, max_files=settings.max_files)
    try:
        if fields:
            raise HTTPException(400, f"unexpected form field(s) {', '.join(sorted(fields))}: send only image files; "
                                     "top_k is a query parameter (?top_k=3)")
        uploads = [(upload.filename or f"image-{index + 1}", upload.file) for index, upload in enumerate(files)]
        try:
            images = await service.predict(name, uploads, top_k)
        except Overloaded as error:
            service.metrics.rejected.labels(name).inc()
            raise HTTPException(503, f"{error}; retry shortly", headers=_retry(settings)) from None
    finally:
        for upload in files:
            await upload.close()
    body = {"model": name, "backbones": model.backbone_names(), "top_k": top_k, "images": images,
            "timing_ms": {"total": round((time.perf_counter() - started) * 1000.0, 3)}}
    status = request_status(images)
    if status != 200:
        body["detail"] = "no image could be used: " + "; ".join(f"{i['filename']}: {i['error']}" for i in images)
    return JSONResponse(body, status_code=status)


def _retry(settings) -> dict:
    return {"Retry-After": str(settings.retry_after_s)}


def _add_operational_routes(app, service, metrics) -> None:
    from fastapi import Response
    from fastapi.responses import FileResponse, JSONResponse

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(resources.files("pintopic.serve") / "static" / "index.html", headers=PAGE_HEADERS)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every model loaded and warmed up (503 until then)")
    async def readyz():
        states = {name: model.state for name, model in service.models.items()}
        return JSONResponse({"ready": service.ready, "models": states}, status_code=200 if service.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def metrics_text():
        body, content_type = metrics.text()
        return Response(body, media_type=content_type)
