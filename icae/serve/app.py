"""The HTTP front of the engine: OpenAI-compatible routes (FastAPI).

    POST /v1/chat/completions    chat completion (``stream: true`` for server-sent events in the OpenAI chunk format)
    GET  /v1/models              the served model
    GET  /health                 liveness and queue depth
    GET  /metrics                Prometheus text: requests, tokens, decoder positions, tokens saved, cache hits, latency

Errors are OpenAI-style JSON (``{"error": {"message", "type", "param", "code"}}``) with status 400 (bad request,
context window), 404 (unknown model or route) or 500 (the model failed; no traceback is sent).
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from icae.serve import protocol
from icae.serve.engine import Engine
from icae.serve.render import RequestError


def _error(status: int, message: str, kind: str = "invalid_request_error", param=None, code=None) -> JSONResponse:
    return JSONResponse(protocol.error(message, kind, param, code), status_code=status)


def _usage(job) -> dict:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": len(job.ids),
            "total_tokens": job.prompt_tokens + len(job.ids), "compression": job.stats}


def create_app(engine: Engine, model_name: str) -> FastAPI:
    app = FastAPI(title="icae serve", description="OpenAI-compatible chat completions with compressed tool outputs")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        engine.metrics.error()
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON", code="invalid_json")
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors())
        return _error(400, f"invalid request: {problems}", param=where, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else
                      "invalid_request_error")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        engine.metrics.error()
        return _error(500, f"the server failed on this request ({type(exc).__name__}); see its log", "server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "queue_depth": engine.queue_depth,
                "cached_conversations": len(engine.conversations), "cached_observations": len(engine.slots)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "icae"}]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(body: protocol.ChatRequest, request: Request):
        if body.model != model_name:
            engine.metrics.error()
            return _error(404, f"model {body.model!r} is not served here; this server serves {model_name!r}",
                          "not_found_error", "model", "model_not_found")
        try:
            job = engine.prepare([m.as_dict() for m in body.messages], body.limit, body.temperature, body.top_p,
                                 body.stops, body.seed)
        except RequestError as e:
            engine.metrics.error()
            return _error(400, str(e), param=e.param, code=e.code)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job.emit = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        started, cid = time.perf_counter(), protocol.completion_id()
        engine.submit(job)
        if body.stream:
            return StreamingResponse(_stream(engine, job, events, cid, model_name, started),
                                     media_type="text/event-stream")
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()  # frees its place in the batch
                    return _error(499, "client disconnected")
                continue
            if event is None:
                break
            if "error" in event:
                return _error(500, f"generation failed: {event['error']}", "server_error")
        engine.metrics.observe_latency(time.perf_counter() - started)
        return protocol.response(cid, model_name, job.text, job.finish or "stop", _usage(job))

    return app


async def _stream(engine: Engine, job, events: asyncio.Queue, cid: str, model_name: str, started: float):
    """Server-sent events: a role chunk, content chunks, a final chunk with the finish reason and usage, [DONE]."""
    def sse(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    try:
        yield sse(protocol.chunk(cid, model_name, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if event is None:
                break
            if "error" in event:
                yield sse(protocol.error(f"generation failed: {event['error']}", "server_error"))
                return
            yield sse(protocol.chunk(cid, model_name, {"content": event["delta"]}))
        engine.metrics.observe_latency(time.perf_counter() - started)
        yield sse(protocol.chunk(cid, model_name, {}, job.finish or "stop", _usage(job)))
        yield "data: [DONE]\n\n"
    finally:
        if job.finish is None:
            job.cancelled.set()  # the client went away mid-stream: stop generating for it
