"""Run the application under uvicorn on a socket bound here (so a taken port is one line).

Shutdown is uvicorn's: on SIGINT/SIGTERM it stops accepting connections, lets requests in flight
finish (up to ``graceful_s``), then the application's lifespan lets queued model calls finish.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
from pathlib import Path

from ..errors import BadInput
from .app import ServeSettings, build_app
from .models import open_served


def require_stack() -> None:
    """FastAPI and uvicorn (the ``serve`` extra), or one line saying how to get them."""
    import importlib.util

    for name in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(name) is None:
            raise BadInput(f"headstart serve needs FastAPI and uvicorn ({name} is missing): pip install 'headstart[serve]'")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port), or BadInput naming the problem."""
    if not 0 <= port <= 65535:
        raise BadInput(f"--port {port}: must be from 0 (any free port) to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BadInput(f"--host {host}: cannot be resolved ({e.strerror}); use an address such as 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise BadInput(f"--port {port}: already in use on {host}; stop the other server or choose another port "
                           "(--port 0 picks a free one)") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise BadInput(f"--port {port}: not allowed for this user on {host} (ports below 1024 need privileges); "
                           "choose a port above 1024") from None
        raise BadInput(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def open_models(refs: list[str], *, store, threads: int, indexes: list[str], allow_base_change: bool = False) -> list:
    """The served models for ``refs`` (run ids/folders, ONNX export folders) with ``indexes``
    attached to the run that built each; every problem is found before a port is bound."""
    from ..index import VectorIndex

    served = []
    seen = set()
    for ref in refs:
        s = open_served(ref, store=store, threads=threads, allow_base_change=allow_base_change)
        if s.id in seen:
            raise BadInput(f"{ref}: run {s.id} is given twice; serve each run once")
        seen.add(s.id)
        if not s.verbs():
            raise BadInput(f"{ref}: a {s.task_name} run offers nothing to serve over HTTP yet")
        served.append(s)
    for folder in indexes:
        idx = VectorIndex.open(Path(folder).expanduser())
        owner = next((s for s in served if s.id == idx.producer.get("run")), None)
        if owner is None:
            raise BadInput(f"--index {folder}: built by run {idx.producer.get('run')!r}, which is not served; add that run "
                           "to the command")
        owner.attach_index(idx)
    return served


def serve(served: list, *, host: str, port: int, settings: ServeSettings, access_log: bool = False,
          graceful_s: float = 30.0, announce=None) -> None:
    """Serve until interrupted. ``announce(url)`` is called once the socket listens."""
    import uvicorn

    app = build_app(served, settings)
    sock = bind(host, port)
    bound = sock.getsockname()
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                            timeout_graceful_shutdown=graceful_s, lifespan="on", loop="asyncio", http="h11",
                            limit_concurrency=None, backlog=2048)
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler found before it: this one notes it, so a stopped server returns (exit 0) instead of
    # dying by the signal after its clean shutdown. It is in place before the URL is announced:
    # a supervisor may signal the moment it reads the announcement.
    caught: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    def note(sig, frame) -> None:  # also before uvicorn has its own handlers: then stop as soon as it starts
        caught.append(sig)
        server.should_exit = True

    before = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        if announce is not None:
            announce(f"http://{shown_host}:{bound[1]}")
        sys.stdout.flush()
        server.run(sockets=[sock])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        sock.close()


__all__ = ["bind", "open_models", "require_stack", "serve"]
