"""The HTTP front of the engine: OpenAI-compatible routes (FastAPI).

    POST /v1/chat/completions    chat completion (``stream: true`` for server-sent events in the OpenAI chunk format),
                                 tool calls in the Hermes format parsed into ``tool_calls`` (icae.serve.tools)
    GET  /v1/models              the served model, with its context window (``max_model_len``)
    GET  /v1/models/{id}         the same model by id
    GET  /health                 liveness and queue depth
    GET  /metrics                Prometheus text: requests, tokens, decoder positions, tokens saved, cache hits, latency

Errors are OpenAI-style JSON (``{"error": {"message", "type", "param", "code"}}``) with status 400 (bad request,
context window: code ``context_length_exceeded``), 401 (API key), 404 (unknown model or route), 413 (body too large)
or 500 (the model failed; no traceback is sent, and the connection stays usable).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from icae.serve import protocol, tools
from icae.serve.engine import Engine
from icae.serve.render import Prepared, RequestError


def _error(status: int, message: str, kind: str = "invalid_request_error", param=None, code=None) -> JSONResponse:
    return JSONResponse(protocol.error(message, kind, param, code), status_code=status)


def _usage(job) -> dict:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": len(job.ids),
            "total_tokens": job.prompt_tokens + len(job.ids), "compression": job.stats}


def _count(engine: Engine, counter: str, n: int) -> None:
    """Add to a counter of /metrics that the app keeps (the engine's Metrics renders every counter it holds)."""
    with engine.metrics._lock:
        engine.metrics.counters[counter] = engine.metrics.counters.get(counter, 0) + n


def _logprobs(entries: list[dict]) -> dict:
    """The engine's per-token logprobs in OpenAI's ``choices[].logprobs`` shape."""
    def one(e: dict) -> dict:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode())}
    return {"content": [{**one(e), "top_logprobs": [one(t) for t in e.get("top", [])]} for e in entries]}


class Guard:
    """The layer around the app (pure ASGI): checks the API key of ``/v1`` requests (401), refuses bodies over
    ``max_bytes`` with 413 before the app reads them, and answers an unexpected exception with a 500 in OpenAI's shape
    *without* re-raising it, so the server closes no connection (a client's next request on it works)."""

    def __init__(self, app, max_bytes: int, on_error, api_key: Optional[str] = None):
        self.app, self.max_bytes, self.on_error, self.api_key = app, max_bytes, on_error, api_key

    def authorised(self, scope) -> bool:
        if not self.api_key or not scope.get("path", "").startswith("/v1") or scope.get("method") == "OPTIONS":
            return True
        given = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        return hmac.compare_digest(token.encode(), self.api_key.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self.authorised(scope):
            return await _error(401, "Incorrect API key provided: send the server's key as 'Authorization: Bearer KEY'",
                                code="invalid_api_key")(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        too_big = f"the request body is larger than this server's max_request_mb ({self.max_bytes / 1e6:g} MB)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _error(413, too_big, code="request_too_large")(scope, receive, send)
        body, more = [], True
        while more and scope.get("method") in ("POST", "PUT", "PATCH"):  # read (bounded) before the app does
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > self.max_bytes:
                return await _error(413, too_big, code="request_too_large")(scope, receive, send)
        replay = {"type": "http.request", "body": b"".join(body), "more_body": False}

        async def replayed():
            nonlocal replay
            if replay is not None:
                message, replay = replay, None
                return message
            return await receive()

        try:
            await self.app(scope, replayed if body else receive, tracked_send)
        except Exception as e:  # the log has it; the client gets one line
            self.on_error(e)
            if not started:
                await _error(500, f"the server failed on this request ({type(e).__name__}); see its log",
                             "server_error")(scope, receive, send)


def create_app(engine: Engine, model_name: str, api_key: Optional[str] = None) -> FastAPI:
    """The app for ``engine``; limits, CORS origins and the default API key come from ``engine.config.serve``
    (``api_key`` here, else the config's, else the ICAE_API_KEY environment variable; none: no key asked)."""
    serve = engine.config.serve
    api_key = api_key or serve.api_key or os.environ.get("ICAE_API_KEY") or None
    window = engine.model.args.model_max_length
    app = FastAPI(title="icae serve", description="OpenAI-compatible chat completions with compressed tool outputs")
    def crashed(e: Exception) -> None:
        import traceback

        engine.metrics.error()
        traceback.print_exception(e)

    # Pure ASGI layers only: Starlette's BaseHTTPMiddleware (@app.middleware) hides a client's disconnect from the
    # endpoint, and a request whose client left must leave the batch.
    app.add_middleware(Guard, max_bytes=int(serve.max_request_mb * 1e6), on_error=crashed, api_key=api_key)
    if serve.cors_origins:  # outermost: its headers go on every answer, a 401 or 413 included
        app.add_middleware(CORSMiddleware, allow_origins=list(serve.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        engine.metrics.error()
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        if first.get("type") == "json_invalid" or (first.get("type") == "model_attributes_type"
                                                   and not first.get("loc", ())[1:]):
            return _error(400, "the request body is not a valid JSON object", code="invalid_json")
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                             for e in exc.errors())
        return _error(400, f"invalid request: {problems}", param=where, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else
                      "invalid_request_error")

    def card() -> dict:
        return {"id": model_name, "object": "model", "created": 0, "owned_by": "icae", "max_model_len": window}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "queue_depth": engine.queue_depth,
                "cached_conversations": len(engine.conversations), "cached_observations": len(engine.slots)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != model_name:
            return _error(404, f"model {model_id!r} is not served here; this server serves {model_name!r}",
                          "not_found_error", "model", "model_not_found")
        return card()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(body: protocol.ChatRequest, request: Request):
        if body.model != model_name:
            engine.metrics.error()
            return _error(404, f"model {body.model!r} is not served here; this server serves {model_name!r}",
                          "not_found_error", "model", "model_not_found")
        unsupported = body.unsupported()
        if unsupported:
            engine.metrics.error()
            return _error(400, "; ".join(unsupported), code="unsupported_parameter")
        try:  # tokenising and rendering are CPU work: off the event loop, so /health answers meanwhile
            prepared: Prepared = await run_in_threadpool(engine.renderer.render, body)
        except RequestError as e:
            engine.metrics.error()
            return _error(400, str(e), param=e.param, code=e.code)
        job = prepared.job
        job.logprobs = (body.top_logprobs or 0) if body.logprobs else None
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job.emit = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        started, cid = time.perf_counter(), protocol.completion_id()
        engine.submit(job)
        if body.stream:
            return StreamingResponse(_stream(engine, prepared, events, cid, model_name, started),
                                     media_type="text/event-stream")
        entries: list[dict] = []
        checked = time.perf_counter()
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                event = False  # nothing yet
            # Polled on a clock: while tokens flow every step, the wait above never times out.
            if event is False or time.perf_counter() - checked > 0.25:
                checked = time.perf_counter()
                if await request.is_disconnected():
                    job.cancelled.set()  # frees its place in the batch at the next step
                    return _error(499, "client disconnected")
            if event is False:
                continue
            if event is None:
                break
            if "error" in event:
                return _error(500, f"generation failed: {event['error']}", "server_error")
            entries += event.get("logprobs") or []
        engine.metrics.observe_latency(time.perf_counter() - started)
        message, finish = _reply(prepared, job.text, job.finish or "stop")
        if message.get("tool_calls"):
            _count(engine, "tool_calls_total", len(message["tool_calls"]))
        return protocol.response(cid, model_name, message, finish, _usage(job),
                                 _logprobs(entries) if body.logprobs else None)

    return app


def _reply(prepared: Prepared, text: str, finish: str) -> tuple[dict, str]:
    """(the assistant message, finish reason) of a finished reply: tool calls parsed when tools were offered."""
    if not prepared.tool_names:
        return {"content": text}, finish
    parsed = tools.parse(prepared.prefix + text, prepared.tool_names, prepared.parallel)
    if not parsed.calls:
        return {"content": prepared.prefix + text}, finish
    return {"content": parsed.content, "tool_calls": parsed.calls}, "tool_calls"


async def _stream(engine: Engine, prepared: Prepared, events: asyncio.Queue, cid: str, model_name: str,
                  started: float):
    """Server-sent events: a role chunk, content chunks, tool-call chunks (once the reply is complete), a final chunk
    with the finish reason and usage, [DONE]."""
    def sse(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    job = prepared.job
    want_logprobs = job.logprobs is not None
    parser = tools.ToolStream(prepared.tool_names, prepared.parallel, prepared.prefix) if prepared.tool_names else None
    try:
        yield sse(protocol.chunk(cid, model_name, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if event is None:
                break
            if "error" in event:
                yield sse(protocol.error(f"generation failed: {event['error']}", "server_error"))
                return
            text = parser.feed(event["delta"]) if parser else event["delta"]
            logprobs = _logprobs(event.get("logprobs") or []) if want_logprobs else None
            if text or logprobs:
                yield sse(protocol.chunk(cid, model_name, {"content": text}, logprobs=logprobs))
        engine.metrics.observe_latency(time.perf_counter() - started)
        finish = job.finish or "stop"
        if parser:
            rest, calls = parser.finish()
            if rest:
                yield sse(protocol.chunk(cid, model_name, {"content": rest}))
            if calls:
                finish = "tool_calls"
                _count(engine, "tool_calls_total", len(calls))
                deltas = [{"index": i, **call} for i, call in enumerate(calls)]
                yield sse(protocol.chunk(cid, model_name, {"tool_calls": deltas}))
        yield sse(protocol.chunk(cid, model_name, {}, finish, _usage(job)))
        yield "data: [DONE]\n\n"
    finally:
        if job.finish is None:
            job.cancelled.set()  # the client went away mid-stream: stop generating for it
