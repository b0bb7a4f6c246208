"""The HTTP application: FastAPI routes over the served models' verbs.

Routes: ``GET /health`` (the process answers), ``GET /ready`` (every model loaded: 200, else
503 with what is loading or failed), ``GET /metrics`` (Prometheus text), ``GET /v1/models``
(what is served, each verb's fields and parameters), ``POST /v1/<verb>`` for every verb a served
model's task declares (:mod:`headstart.tasks.verbs`), ``GET /openapi.json`` and ``/docs``.

A verb request is a JSON object: the verb's item field (one item or a list of at most
``max_inputs``), its parameters, and ``model`` (a served run id or unique prefix; may be left out
when one served model offers the verb). Unknown fields are refused. Every refusal is a 4xx with
``{"error": "<field>: <what is wrong and what to do>", "field": "<field>"}`` — 413 for a body
over ``max_request_bytes``, 422 for a field, 404 for an unknown model, 503 while loading or
when the queue is full (with ``Retry-After``) — never a 5xx for bad input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from ..errors import BadInput
from .batching import Busy, MicroBatcher
from .metrics import Metrics

log = logging.getLogger("headstart.serve")


@dataclass
class ServeSettings:
    """How the server batches, limits and threads (the ``headstart serve`` options)."""

    threads: int = 1
    """torch intra-op threads for the model calls (:func:`default_threads` picks it for the CLI)."""
    max_batch: int = 32
    """Items per model call at most (1: no micro-batching, one request per call)."""
    max_wait_ms: float = 5.0
    """How long the first request of a batch waits for others to join."""
    max_inputs: int = 64
    """Items per request at most."""
    max_request_bytes: int = 1 << 20
    """Request body size at most (bytes)."""
    max_text_chars: int = 20_000
    """Characters per text item at most."""
    max_queue: int = 4096
    """Items waiting for a model at most; beyond, requests are refused with 503 + Retry-After."""

    def validate(self) -> None:
        checks = [("--threads", self.threads, 1), ("--max-batch", self.max_batch, 1), ("--max-inputs", self.max_inputs, 1),
                  ("--max-queue", self.max_queue, 1)]
        for flag, value, low in checks:
            if value < low:
                raise BadInput(f"{flag} {value}: must be at least {low}")
        if self.max_request_bytes < 1024:
            raise BadInput(f"--max-request-mb {self.max_request_bytes / (1 << 20):g}: must be at least 1 KiB (0.001)")
        if not 0 <= self.max_wait_ms <= 1000:
            raise BadInput(f"--max-wait-ms {self.max_wait_ms}: must be between 0 and 1000")


MAX_DEFAULT_THREADS = 4


def default_threads(batching: bool) -> int:
    """The thread count ``headstart serve`` uses unless told: with micro-batching, the cores this
    process may use, at most :data:`MAX_DEFAULT_THREADS`; one request per call: 1.

    Measured on 2 cores with the load generator beside the server (``benchmarks/serve.py``):
    batches of ~8 texts ran 1.4-1.7x faster with 2 threads than with 1, while single texts with 2
    threads were erratic (5.8 to 27 requests/s against 24 with 1 thread: OpenMP workers spinning
    against the event loop). More than 2 threads was not measured, hence the cap."""
    if not batching:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


class ServerState:
    """The served models, their batchers and the metrics, shared by the routes."""

    def __init__(self, served: list, settings: ServeSettings):
        self.settings = settings
        self.served = {s.id: s for s in served}
        self.metrics = Metrics()
        self.verbs: dict[str, dict[str, Any]] = {}  # verb name -> {model id: Verb}
        for s in served:
            for v in s.verbs():
                self.verbs.setdefault(v.name, {})[s.id] = v
        self.batchers = {s.id: self._batcher(s) for s in served}
        self.metrics.gauges["headstart_queue_items"] = (
            "Items waiting for a model call.", lambda: [((("model", m),), b.queued_items) for m, b in self.batchers.items()])
        self.metrics.gauges["headstart_ready"] = ("1 when every served model is loaded.", lambda: [((), int(self.ready()))])

    def _batcher(self, served) -> MicroBatcher:
        verbs = {v.name: v for v in served.verbs()}

        def call(verb: str, items: list, params: dict) -> list:
            return verbs[verb].call(served, items, params)

        def limit(verb: str) -> int:
            return verbs[verb].max_batch or self.settings.max_batch

        return MicroBatcher(call, max_batch=self.settings.max_batch, max_wait_s=self.settings.max_wait_ms / 1000,
                            max_queue=self.settings.max_queue, threads=self.settings.threads, name=served.id,
                            on_batch=lambda verb, n, sec: self.metrics.batch(served.id, verb, n, sec),
                            batch_limit=limit, setup=served.warm_up)

    def ready(self) -> bool:
        return all(b.ready.is_set() and b.failed is None for b in self.batchers.values())

    def start(self) -> None:
        for b in self.batchers.values():
            b.start()

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()

    def pick(self, verb: str, model: str | None):
        """The served model a verb request goes to (``model``: an id or unique prefix)."""
        offering = self.verbs[verb]
        if model is None:
            if len(offering) == 1:
                return next(iter(offering))
            raise _Refusal(422, "model", f"model: {len(offering)} served runs answer /v1/{verb}; name one of "
                                         f"{', '.join(sorted(offering))}")
        hits = [m for m in offering if m == model] or [m for m in offering if m.startswith(model)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise _Refusal(422, "model", f"model: {model!r} matches {len(hits)} served runs ({', '.join(sorted(hits))}); "
                                         "give more of the id")
        others = sorted(self.served)
        raise _Refusal(404, "model", f"model: no served run {model!r} answers /v1/{verb}; served: {', '.join(others)}")


class _Refusal(Exception):
    def __init__(self, status: int, field: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers or {}


def build_app(served: list, settings: ServeSettings | None = None):
    """The FastAPI application over ``served`` models (see the module docstring)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    settings.validate()
    state = ServerState(served, settings)

    @asynccontextmanager
    async def lifespan(app):
        state.start()
        try:
            yield
        finally:  # uvicorn has let in-flight requests finish; queued jobs finish here
            await asyncio.get_running_loop().run_in_executor(None, state.close)

    from .. import __version__

    app = FastAPI(title="headstart", version=__version__, lifespan=lifespan,
                  description="Adapted models served by `headstart serve`: one POST route per verb of the served runs' "
                              "tasks. Errors are JSON objects {error, field}.")
    app.state.headstart = state

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        field, message = _first_error(exc.errors())
        state.metrics.error(_route(request), "bad_input")
        return JSONResponse({"error": message, "field": field}, status_code=422)

    @app.exception_handler(_Refusal)
    async def refused(request: Request, exc: _Refusal):
        kind = {503: "busy", 500: "model", 404: "not_found"}.get(exc.status, "bad_input")
        state.metrics.error(_route(request), kind)
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        state.metrics.error(_route(request), "not_found" if exc.status_code == 404 else "bad_request")
        hint = {404: "no such route; see /openapi.json", 405: "method not allowed on this route; see /openapi.json"}
        return JSONResponse({"error": f"{request.url.path}: {hint.get(exc.status_code, exc.detail)}", "field": ""},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health", summary="the process is up")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="every served model is loaded (200) or not yet (503)")
    async def ready():
        loading = [m for m, b in state.batchers.items() if not b.ready.is_set()]
        failed = {m: f"{type(b.failed).__name__}: {b.failed}" for m, b in state.batchers.items() if b.failed is not None}
        body = {"ready": not loading and not failed, "models": sorted(state.served), "loading": loading, "failed": failed}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", summary="the served models, their verbs and parameters")
    async def models():
        out = []
        for s in state.served.values():
            d = s.describe()
            d["verbs"] = [{"name": v.name, "route": f"/v1/{v.name}", "summary": v.summary, "field": v.field,
                           "item": v.item, "result": v.result,
                           "params": {p.name: {"type": p.type.__name__, "default": p.default, "help": p.help}
                                      for p in v.params}} for v in s.verbs()]
            out.append(d)
        return {"models": out, "limits": {"max_inputs": settings.max_inputs, "max_batch": settings.max_batch,
                                          "max_wait_ms": settings.max_wait_ms, "max_request_bytes": settings.max_request_bytes}}

    for name, offering in state.verbs.items():
        verb = _one_schema(name, offering)
        _add_verb_route(app, state, verb, _request_model(verb, settings))
    app.add_middleware(_Guard, state=state)
    return app


def _add_verb_route(app, state: ServerState, verb, request_model) -> None:
    async def handle(body):
        data = body.model_dump()
        model_id = state.pick(verb.name, data.pop("model", None))
        items = data.pop(verb.field)
        items = items if isinstance(items, list) and not _is_messages(items, verb.item) else [items]
        items = [_plain(it) for it in items]
        batcher = state.batchers[model_id]
        if not batcher.ready.is_set():
            raise _Refusal(503, "model", f"model: run {model_id} is still loading; GET /ready says when it is ready",
                           {"Retry-After": "1"})
        if batcher.failed is not None:
            raise _Refusal(503, "model", f"model: run {model_id} failed to load ({batcher.failed}); see the server log")
        params = {p.name: data.get(p.name, p.default) for p in verb.params}
        try:
            results = await batcher.submit(verb.name, items, params)
        except Busy as e:
            raise _Refusal(503, "", f"busy: {e}; retry shortly", {"Retry-After": "1"}) from None
        except BadInput as e:
            raise _Refusal(422, verb.field, f"{verb.field}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the model failed on valid input: a 500 that says so, logged
            log.exception("run %s failed on /v1/%s", model_id, verb.name)
            raise _Refusal(500, "", f"internal error: run {model_id} failed on this request ({type(e).__name__}: {e}); "
                                    "see the server log") from None
        return {"model": model_id, verb.result: results}

    handle.__annotations__ = {"body": request_model}  # a real class, not the string `from __future__` would leave
    app.add_api_route(f"/v1/{verb.name}", handle, methods=["POST"], summary=verb.summary, name=verb.name,
                      responses={413: {"description": "body too large"}, 422: {"description": "a field is invalid"},
                                 503: {"description": "loading or busy"}})


def _one_schema(name: str, offering: dict):
    """The verb's definition (all served models offering ``name`` must agree on its fields)."""
    verbs = list(offering.values())
    first = verbs[0]
    for v in verbs[1:]:
        if (v.field, v.item, v.params) != (first.field, first.item, first.params):
            raise BadInput(f"the served runs define /v1/{name} differently ({', '.join(offering)}); serve them from "
                           "separate servers")
    return first


def _item_type(kind: str, settings: ServeSettings):
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    if kind == "text":
        return Annotated[str, StringConstraints(min_length=1, max_length=settings.max_text_chars, pattern=r"\S")]
    if kind == "prompt":
        class Message(BaseModel):
            model_config = ConfigDict(extra="forbid")
            role: Literal["system", "user", "assistant"]
            content: Annotated[str, StringConstraints(max_length=settings.max_text_chars)]

        text = Annotated[str, StringConstraints(min_length=1, max_length=settings.max_text_chars, pattern=r"\S")]
        return text | Annotated[list[Message], Field(min_length=1)]
    # audio / image: base64 text of a file, bounded by the request size
    return Annotated[str, StringConstraints(min_length=4)]


def _request_model(verb, settings: ServeSettings):
    from pydantic import ConfigDict, Field, StringConstraints, create_model

    item = _item_type(verb.item, settings)
    items = item | Annotated[list[item], Field(min_length=1, max_length=settings.max_inputs)]
    fields: dict[str, Any] = {
        "model": (str | None, Field(None, description="served run id (or unique prefix); optional when one run offers "
                                                      "this verb")),
        verb.field: (items, Field(..., description=f"one {verb.item} or a list of at most {settings.max_inputs}",
                                  examples=[[verb.example]] if verb.example is not None else None)),
    }
    for p in verb.params:
        if p.type is list:
            typ: Any = list[Annotated[str, StringConstraints(min_length=1)]] | None
            fields[p.name] = (typ, Field(p.default, description=p.help, max_length=16))
            continue
        typ = Literal[tuple(p.choices)] if p.choices else p.type  # type: ignore[valid-type]
        strict = {} if p.choices else {"strict": True}  # "5" is not the integer 5
        fields[p.name] = (typ, Field(p.default, description=p.help, ge=p.ge, le=p.le, **strict))
    return create_model(f"{verb.name.capitalize()}Request", __config__=ConfigDict(extra="forbid"), **fields)


def _is_messages(value, kind: str) -> bool:
    """A prompt given as one message list (not a list of prompts)."""
    return kind == "prompt" and isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _plain(item):
    return [dict(m) for m in item] if isinstance(item, list) else item


def _first_error(errors: list[dict]) -> tuple[str, str]:
    """(field, one line) of the first validation error: ``inputs[3]: String should have at least 1 character``."""
    if not errors:
        return "body", "body: invalid request"
    # An items field is "one item | a list of them": pydantic reports both branches. When the client
    # sent a list, the list branch's errors are the ones about what it sent; of those, the deepest
    # names the item.
    listy = [e for e in errors if any(isinstance(p, str) and p.startswith("list[") for p in e.get("loc", ()))]
    if listy and any(isinstance(e.get("input"), list) for e in errors if e not in listy):
        errors = listy
    e = max(errors, key=lambda err: len(err.get("loc", ())))
    loc = [p for p in e.get("loc", ()) if p != "body"]
    # pydantic reports unions per member ("str", "list[...]"); keep the path the client wrote
    loc = [p for p in loc if not (isinstance(p, str) and (p.startswith(("str", "list[", "function-", "constrained-"))
                                                             or "[" in p and p.endswith("]")))]
    field = ""
    for p in loc:
        field += f"[{p}]" if isinstance(p, int) else (f".{p}" if field else str(p))
    field = field or "body"
    kind = e.get("type", "")
    if kind == "json_invalid":
        return "body", f"body: not valid JSON ({e.get('ctx', {}).get('error', 'parse error')}); send a JSON object"
    if kind == "missing":
        return field, f"{field}: required"
    if kind == "extra_forbidden":
        return field, f"{field}: unknown field; see GET /v1/models or /openapi.json for this route's fields"
    if kind == "string_pattern_mismatch":
        return field, f"{field}: must not be empty or only whitespace"
    if kind == "model_attributes_type" or kind == "dict_type":
        return field, f"{field}: expected a JSON object"
    return field, f"{field}: {e.get('msg', 'invalid')}"


def _route(request) -> str:
    return _route_of(request.scope)


def _route_of(scope) -> str:
    path = scope.get("path", "")
    for route in scope.get("app").routes if scope.get("app") is not None else ():
        if getattr(route, "path", None) == path:
            return path
    return "other"


class _Guard:
    """ASGI middleware: the body size limit (413 before the app reads a byte too many) and the
    per-route request counts and latency."""

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        route = _route_of(scope)
        status = {"code": 500}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            limit = self.state.settings.max_request_bytes
            declared = dict(scope.get("headers") or ()).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _too_large(counted_send, limit)
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body, more = bytearray(), True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > limit:
                        await _too_large(counted_send, limit)
                        return
                sent = False

                async def replay():
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": bytes(body), "more_body": False}
                    return await receive()

                await self.app(scope, replay, counted_send)
            else:
                await self.app(scope, receive, counted_send)
        except Exception:
            log.exception("internal error on %s", scope.get("path"))
            self.state.metrics.error(route, "internal")
            raise
        finally:
            self.state.metrics.request(route, status["code"], time.perf_counter() - t0)
            if status["code"] == 413:
                self.state.metrics.error(route, "too_large")


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"error": f"body: larger than the server's limit of {limit} bytes; send fewer or smaller items "
                                "(the server's --max-request-mb)", "field": "body"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ServeSettings", "ServerState", "build_app"]
