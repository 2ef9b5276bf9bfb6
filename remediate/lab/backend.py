"""The lab's backend programs (stdlib only; supervisord runs them as ``python -m``).

Roles:

* ``app``: an HTTP app with ``/api/...``, a slow ``/reports/...`` (its delay is
  read from the state file ``reports_delay`` on every request: slowness is the
  backend's nature, a restart does not cure it), ``/hold/?s=N`` for load, and
  ``/healthz``. With ``--tls`` it serves HTTPS with the certificate the state
  file ``tls_issuer`` names at start-up.
* ``flaky``: healthy until told otherwise. SIGUSR1 makes it accept and close
  without a byte (an empty reply), SIGUSR2 makes it answer garbage. Both are
  process state, so a restart cures them, unless the state file ``flaky_mode``
  says the program is broken from the start.
* ``load``: a bounded load on nginx that holds slow requests until nginx has
  exactly one connection slot left, so the next proxied request finds
  ``worker_connections are not enough``. It exits by itself after --duration.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["main"]

_SERVED_PREFIXES = ("/api/", "/reports/", "/hold/", "/dyn/", "/svc/", "/secure/")


def _state(directory: Path, name: str, default: str) -> str:
    try:
        return (directory / name).read_text().strip() or default
    except FileNotFoundError:
        return default


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    mode = "ok"  # flaky only: "ok", "empty" or "garbage"

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], args: Any) -> None:
        self.args = args
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.server.args.name} {self.address_string()} {format % args}\n")
        sys.stderr.flush()

    def reply(self, status: int, body: dict[str, Any] | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        args = self.server.args
        if args.role == "flaky":
            if self.server.mode == "empty":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.server.mode == "garbage":
                self.wfile.write(b"\x00\x17garbage, not HTTP\r\n\r\n")
                self.close_connection = True
                return
        url = urlsplit(self.path)
        path = url.path
        if args.role == "flaky" and path != "/healthz":
            self.reply(404, {"error": "this backend only answers /healthz", "path": path})
        elif path == "/healthz":
            self.reply(200, {"status": "ok", "backend": args.name})
        elif path.startswith("/reports/"):
            time.sleep(float(_state(args.state, "reports_delay", "0.05")))
            self.reply(200, {"report": path, "backend": args.name})
        elif path.startswith("/hold/"):
            seconds = min(float(parse_qs(url.query).get("s", ["60"])[0]), 900.0)
            time.sleep(seconds)
            self.reply(200, {"held": seconds})
        elif path == "/" or path.startswith(_SERVED_PREFIXES):
            self.reply(200, {"path": path, "backend": args.name})
        else:
            self.reply(404, {"error": "not found", "path": path})


def _serve(args: Any) -> None:
    # A backend that cannot start (bad deploy): the state file crash_on_start names the programs.
    if args.name in _state(args.state, "crash_on_start", "").split():
        sys.stderr.write(f"{args.name}: FATAL: cannot load configuration /etc/{args.name}/app.yml (lab fault)\n")
        sys.exit(1)
    host, port = args.listen.rsplit(":", 1)
    server = _Server((host, int(port)), _Handler, args)
    if args.tls:
        issuer = _state(args.state, "tls_issuer", "public")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.pki / f"app01-{issuer}.crt", args.pki / f"app01-{issuer}.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    if args.role == "flaky":
        server.mode = _state(args.state, "flaky_mode", "ok")

        def set_mode(mode: str) -> Any:
            def handler(signum: int, frame: Any) -> None:
                server.mode = mode
                sys.stderr.write(f"{args.name}: now answering {mode}\n")

            return handler

        signal.signal(signal.SIGUSR1, set_mode("empty"))
        signal.signal(signal.SIGUSR2, set_mode("garbage"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(f"{args.name}: {args.role} listening on {args.listen}\n")
    server.serve_forever()


# -- load --------------------------------------------------------------------------


def _probe(target: tuple[str, int], path: str, timeout: float) -> int | None:
    """The status nginx answers for ``path``; None when it does not answer in time."""
    try:
        with socket.create_connection(target, timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: web01.lab\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
        return int(head.split()[1]) if head.startswith(b"HTTP/") else None
    except (OSError, ValueError, IndexError):
        return None


def _hold(target: tuple[str, int], seconds: int) -> socket.socket:
    sock = socket.create_connection(target, timeout=5)
    sock.sendall(f"GET /hold/?s={seconds} HTTP/1.1\r\nHost: web01.lab\r\n\r\n".encode())
    return sock


def _load(args: Any) -> None:
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))
    deadline = time.monotonic() + args.duration
    held: list[socket.socket] = []
    idle: list[socket.socket] = []
    status_file = Path(args.status)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def report(state: str) -> None:
        status_file.write_text(json.dumps({"state": state, "held": len(held), "idle": len(idle)}) + "\n")

    report("starting")
    # Each held request takes two of nginx's connections (client + upstream).
    # Add them until the probe, which needs two, finds only one: then nginx
    # logs "worker_connections are not enough while connecting to upstream".
    while len(held) < args.max_conns:
        status = _probe(target, args.probe, 2.0)
        if status in (500, 502):  # 500 when nginx proxies to one address (ngx_http_upstream_connect)
            break
        if status is None:
            # Overshot by one: no slot left even to accept. Give two back, take one.
            held.pop().close()
            time.sleep(0.3)
            idle.append(socket.create_connection(target, timeout=5))
            continue
        held.append(_hold(target, args.duration))
        time.sleep(0.02)
    report("holding")
    # Keep the pressure, within the time bound: an idle connection nginx drops
    # after client_header_timeout is opened again.
    while time.monotonic() < deadline:
        for index, sock in enumerate(idle):
            sock.settimeout(0)
            try:
                if sock.recv(1) == b"":
                    idle[index] = socket.create_connection(target, timeout=5)
            except BlockingIOError:
                pass
            except OSError:
                idle[index] = socket.create_connection(target, timeout=5)
        time.sleep(0.2)
    report("done")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="remediate.lab.backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--role", choices=["app", "flaky"], required=True)
    serve.add_argument("--name", required=True)
    serve.add_argument("--listen", required=True)
    serve.add_argument("--state", type=Path, required=True)
    serve.add_argument("--pki", type=Path)
    serve.add_argument("--tls", action="store_true")
    load = sub.add_parser("load")
    load.add_argument("--target", required=True)
    load.add_argument("--probe", default="/")
    load.add_argument("--status", required=True)
    load.add_argument("--max-conns", type=int, default=400)
    load.add_argument("--duration", type=int, default=600)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args)
    else:
        _load(args)


if __name__ == "__main__":
    main()
