"""``cellax serve RUN [RUN...] --port P --token-file F``: streaming estimation for many live cells.

An ASGI app (Starlette on uvicorn). Every request but ``GET /health`` carries
``Authorization: Bearer <token>`` (WebSocket: the header or ``?token=``); a wrong one gets 401
before any session is looked up, an unknown session 404.

=========================================  ==============================================================
``POST /sessions``                          ``{"model": NAME, "initial_outputs": [..]}`` → ``{"session", "next_seq", ...}``
``GET /sessions/{id}``                      ``{"model", "next_seq", "checkpointed_seq"}``: where to resume
``POST /sessions/{id}/samples``             ``{"seq": n, "inputs": [..]}`` or a batch ``[[..], ..]`` → outputs
``DELETE /sessions/{id}``                   end the session
``WS /sessions/{id}/stream``                a ``{"seq", "next_seq"}`` greeting, then one reply per sample message
=========================================  ==============================================================

A session's samples are consumed in order (``seq`` must equal ``next_seq`` when given; else 409
with ``next_seq``); each model's :class:`~cellax.deploy.batcher.Batcher` steps the samples of all
its cells together. A malformed sample (not a number, NaN, wrong length, current outside the
cell's pulse limits) gets 422 naming the field, and the session's state is left as it was.
Sessions idle for ``idle_expiry_s`` are dropped; sessions are checkpointed by
:class:`~cellax.deploy.sessions.SessionStore` and restored when the server starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import time
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cellax.deploy.batcher import Batcher
from cellax.deploy.export import DeployError, load_step
from cellax.deploy.sessions import Session, SessionStore, new_id, valid_id


class Invalid(Exception):
    """A request the client must fix: ``status`` and a message naming the field."""

    def __init__(self, status: int, field: str, message: str, **extra):
        super().__init__(message)
        self.status, self.field, self.extra = status, field, extra

    def body(self) -> dict:
        return {"error": str(self), "field": self.field, **self.extra}


class Model:
    """A served run: its deployed step, batcher and input limits."""

    def __init__(self, name: str, run: Path, max_wait_s: float):
        self.step, origin = load_step(run)
        self.name, self.batcher = name, Batcher(self.step, max_wait_s)
        self.inputs, self.outputs = list(self.step.task.inputs), list(self.step.task.outputs)
        self.limits = origin["limits"]
        init_fn, _ = self.step.flat()
        self.init = lambda initial: [np.asarray(a) for a in init_fn(initial)]

    def describe(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs, "limits": self.limits,
                "needs_initial_outputs": self.step.task.known_initial}

    def parse_samples(self, value) -> np.ndarray:
        """``inputs`` as a ``(k, n_in)`` float32 array, or :class:`Invalid` naming the bad field."""
        if not isinstance(value, list) or not value:
            raise Invalid(422, "inputs", f"inputs must be a list of {len(self.inputs)} numbers {self.inputs} "
                                         "or a list of such lists")
        batch = all(isinstance(v, list) for v in value)
        rows = value if batch else [value]
        for i, row in enumerate(rows):
            where = f"inputs[{i}]" if batch else "inputs"
            if not isinstance(row, list) or len(row) != len(self.inputs):
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise Invalid(422, where, f"{where} must hold {len(self.inputs)} numbers {self.inputs}, got {got}")
            for name, v in zip(self.inputs, row):
                field = f"{where}.{name}"
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise Invalid(422, field, f"{field} must be a number, got {type(v).__name__}")
                if not math.isfinite(v):
                    raise Invalid(422, field, f"{field} must be finite, got {v}")
                lo, hi = self.limits.get(name, (-math.inf, math.inf))
                if not lo <= v <= hi:
                    raise Invalid(422, field, f"{field} = {v} is outside the cell's limits [{lo}, {hi}]")
        return np.asarray(rows, np.float32)

    def parse_initial(self, value) -> np.ndarray:
        n = len(self.outputs)
        if value is None and not self.step.task.known_initial:
            return np.zeros(n, np.float32)
        if not (isinstance(value, list) and len(value) == n and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise Invalid(422, "initial_outputs", f"initial_outputs must be {n} finite numbers {self.outputs}")
        return np.asarray(value, np.float32)


class Service:
    """Models, sessions and their checkpoints; the routes call into it."""

    def __init__(self, runs: list[Path], token: str, state_dir: Path, checkpoint_every: int, idle_expiry_s: float,
                 max_wait_s: float):
        names = [Path(r).name for r in runs]
        if len(set(names)) != len(names):
            raise DeployError(f"runs must have distinct folder names (a session names its model by it): {names}")
        self.models = {name: Model(name, Path(run), max_wait_s) for name, run in zip(names, runs)}
        self.token, self.checkpoint_every, self.idle_expiry_s = token, checkpoint_every, idle_expiry_s
        self.store = SessionStore(state_dir)
        self.sessions: dict[str, Session] = {}
        for sid, model, seq, state in self.store.load_all():
            if model in self.models:
                self.sessions[sid] = Session(sid, model, state, next_seq=seq, checkpointed_seq=seq)

    def authorise(self, header: str | None, query: str | None = None) -> None:
        supplied = query if query is not None else (header or "").removeprefix("Bearer ")
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            raise Invalid(401, "authorization", "missing or wrong token")

    def session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id) if valid_id(session_id) else None
        if session is None:
            raise Invalid(404, "session", "no such session (expired, deleted or never opened)")
        return session

    async def open(self, body) -> dict:
        if not isinstance(body, dict):
            raise Invalid(422, "body", "the body must be a JSON object")
        model = self.models.get(body.get("model"))
        if model is None:
            raise Invalid(422, "model", f"model must be one of {sorted(self.models)}")
        state = model.init(model.parse_initial(body.get("initial_outputs")))
        session = Session(new_id(), model.name, state)
        await asyncio.to_thread(self.store.save, session.id, session.model, 0, state)
        self.sessions[session.id] = session
        return {"session": session.id, "model": model.name, "next_seq": 0, **model.describe()}

    async def consume(self, session: Session, body) -> dict:
        """Validate all of a request's samples, then step them in order; the state changes only if all are valid."""
        if not isinstance(body, dict):
            raise Invalid(422, "body", "the body must be a JSON object")
        model = self.models[session.model]
        samples = model.parse_samples(body.get("inputs"))
        async with session.lock:
            seq = body.get("seq")
            if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq != session.next_seq):
                raise Invalid(409, "seq", f"seq must be the next sample's number {session.next_seq}",
                              next_seq=session.next_seq)
            first, outputs = session.next_seq, []
            for u in samples:
                y, session.state = await model.batcher.submit(session.state, u)
                session.next_seq += 1
                outputs.append([float(v) for v in y])
                if session.next_seq % self.checkpoint_every == 0:
                    await asyncio.to_thread(self.store.save, session.id, session.model, session.next_seq, session.state)
                    session.checkpointed_seq = session.next_seq
            session.last_active = time.monotonic()
        batch = isinstance(body["inputs"][0], list)
        result = {"outputs": outputs} if batch else {"outputs": outputs[0]}
        return {"seq": first, "next_seq": session.next_seq, "names": model.outputs, **result}

    def close(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.store.delete(session.id)

    async def expire(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_expiry_s / 4, 5.0))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_active > self.idle_expiry_s and not session.lock.locked():
                    self.close(session)


def make_app(service: Service) -> Starlette:
    def guarded(handler):
        async def endpoint(request: Request):
            try:
                service.authorise(request.headers.get("authorization"))
                return await handler(request)
            except Invalid as err:
                return JSONResponse(err.body(), status_code=err.status)

        return endpoint

    async def body(request: Request):
        try:
            return await request.json()
        except ValueError:
            raise Invalid(422, "body", "the body is not valid JSON") from None

    async def health(request: Request):
        return JSONResponse({"ok": True, "models": {n: m.describe() for n, m in service.models.items()},
                             "sessions": len(service.sessions)})

    async def open_session(request: Request):
        return JSONResponse(await service.open(await body(request)), status_code=201)

    async def get_session(request: Request):
        s = service.session(request.path_params["id"])
        return JSONResponse({"session": s.id, "model": s.model, "next_seq": s.next_seq,
                             "checkpointed_seq": s.checkpointed_seq})

    async def delete_session(request: Request):
        service.close(service.session(request.path_params["id"]))
        return JSONResponse({"deleted": request.path_params["id"]})

    async def samples(request: Request):
        session = service.session(request.path_params["id"])
        return JSONResponse(await service.consume(session, await body(request)))

    async def stream(websocket: WebSocket):
        try:
            service.authorise(websocket.headers.get("authorization"), websocket.query_params.get("token"))
            session = service.session(websocket.path_params["id"])
        except Invalid as err:  # the handshake is refused with the HTTP status (401/404)
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(JSONResponse(err.body(), status_code=err.status))
            else:
                await websocket.close(code=4000 + err.status, reason=str(err))
            return
        await websocket.accept()
        await websocket.send_json({"session": session.id, "next_seq": session.next_seq})
        try:
            while True:
                text = await websocket.receive_text()
                try:
                    try:
                        message = json.loads(text)
                    except ValueError:
                        raise Invalid(422, "body", "the message is not valid JSON") from None
                    if session.id not in service.sessions:
                        raise Invalid(404, "session", "the session expired or was deleted")
                    await websocket.send_json(await service.consume(session, message))
                except Invalid as err:
                    await websocket.send_json({"status": err.status, **err.body()})
        except WebSocketDisconnect:
            pass

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for model in service.models.values():
            await asyncio.to_thread(model.batcher.warm_up)
        tasks = [asyncio.create_task(m.batcher.run()) for m in service.models.values()]
        tasks.append(asyncio.create_task(service.expire()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    return Starlette(routes=[
        Route("/health", health),
        Route("/sessions", guarded(open_session), methods=["POST"]),
        Route("/sessions/{id}", guarded(get_session), methods=["GET"]),
        Route("/sessions/{id}", guarded(delete_session), methods=["DELETE"]),
        Route("/sessions/{id}/samples", guarded(samples), methods=["POST"]),
        WebSocketRoute("/sessions/{id}/stream", stream),
    ], lifespan=lifespan)


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise DeployError(f"--token-file {path}: {err.strerror}") from None
    if len(token) < 16:
        raise DeployError(f"--token-file {path}: the token must have at least 16 characters")
    return token


def serve(runs: list[Path], port: int, token_file: Path, host: str = "127.0.0.1", state_dir: Path = Path("serve-state"),
          checkpoint_every: int = 10, idle_expiry_s: float = 3600.0, max_wait_ms: float = 2.0) -> None:
    """Load the runs, restore checkpointed sessions and serve until interrupted."""
    import uvicorn

    if checkpoint_every < 1 or idle_expiry_s <= 0 or max_wait_ms < 0:
        raise DeployError("--checkpoint-every must be >= 1, --idle-expiry-s > 0 and --max-wait-ms >= 0")
    service = Service(list(runs), read_token(token_file), state_dir, checkpoint_every, idle_expiry_s, max_wait_ms / 1e3)
    print(f"serving {', '.join(service.models)} on http://{host}:{port} ({len(service.sessions)} sessions restored "
          f"from {state_dir})", flush=True)
    uvicorn.run(make_app(service), host=host, port=port, log_level="warning", ws_max_size=1 << 20)
