"""The console's HTTP server: the standard library's threading server, JSON endpoints, static files.

Safe by default:

* it binds 127.0.0.1; any other address needs a token (``--token`` or ``TUSK_UI_TOKEN``),
  given once as ``?token=`` (then kept in an HttpOnly, SameSite=Strict cookie) or as
  ``Authorization: Bearer``;
* every mutating action is a POST that carries the page's CSRF token in ``X-Tusk-CSRF`` (a
  header another site's form cannot set) and, when the browser sends one, a matching
  ``Origin``;
* the page builds its DOM with ``textContent`` only, so a payload holding ``<script>`` is text;
  the graph is an ``<img>`` (scripts in an SVG image never run); URLs are shown redacted.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tusk_events.console.api import ConsoleData
from tusk_events.defaults import CONSOLE_HOST, CONSOLE_MAX_BODY, CONSOLE_PORT
from tusk_events.errors import ConfigError, TuskError

if TYPE_CHECKING:
    from tusk_events.runtime.core import Runtime

log = logging.getLogger(__name__)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'self'",
}


def _static(name: str) -> bytes:
    return resources.files("tusk_events.console").joinpath("static", name).read_bytes()


class Console:
    """A console server over one runtime; ``start()`` serves in a thread, ``close()`` stops it.

        >>> console = Console(runtime, port=0).start()   # port 0: any free port
        >>> console.url
        'http://127.0.0.1:41234/'
    """

    def __init__(self, runtime: Runtime, *, host: str = CONSOLE_HOST, port: int = CONSOLE_PORT,
                 token: str | None = None) -> None:
        if host not in _LOOPBACK and not token:
            raise ConfigError(f"the console binds {host}, which other machines can reach: give it a token "
                              "(--token or TUSK_UI_TOKEN), or bind 127.0.0.1")
        self.data = ConsoleData(runtime)
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self._index = _static("index.html").replace(b"{{csrf}}", self.csrf.encode())
        self.httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        address = self.httpd.server_address
        host, port = str(address[0]), int(address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> Console:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tusk-console", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def serve(runtime: Runtime, *, host: str = CONSOLE_HOST, port: int = CONSOLE_PORT,
          token: str | None = None) -> Console:
    """Start a console for ``runtime`` in a background thread."""
    return Console(runtime, host=host, port=port, token=token).start()


def _handler_class(console: Console) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.console = console
    return Handler


class _Handler(BaseHTTPRequestHandler):
    console: Console
    server_version = "tusk-events-console"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in {**_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value, default=str).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _authorised(self) -> tuple[bool, dict[str, str]]:
        token = self.console.token
        if not token:
            return True, {}
        given = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if given is None and "tusk_ui" in cookie:
            given = cookie["tusk_ui"].value
        query = parse_qs(urlsplit(self.path).query)
        set_cookie: dict[str, str] = {}
        if given is None and "token" in query:
            given = query["token"][0]
            set_cookie = {"Set-Cookie": f"tusk_ui={given}; HttpOnly; SameSite=Strict; Path=/"}
        ok = given is not None and hmac.compare_digest(given.encode(), token.encode())
        return ok, set_cookie if ok else {}

    # -- GET -----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        ok, cookie = self._authorised()
        if not ok:
            return self._error(HTTPStatus.UNAUTHORIZED, "a token is needed: open the console with ?token=...")
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        data = self.console.data
        try:
            if url.path == "/":
                return self._send(200, self.console._index, "text/html; charset=utf-8", cookie)
            if url.path in _STATIC:
                name, ctype = _STATIC[url.path]
                return self._send(200, _static(name), ctype)
            if url.path == "/api/overview":
                return self._json(data.overview())
            if url.path == "/api/graph":
                return self._json(data.graph())
            if url.path == "/api/graph.svg":
                svg = data.graph()["svg"]
                if not svg:
                    return self._error(HTTPStatus.NOT_FOUND, "graphviz is not installed")
                return self._send(200, svg.encode(), "image/svg+xml")
            if url.path == "/api/events":
                return self._json(data.events(type=q.get("type"), since=q.get("since"), until=q.get("until"),
                                              trace_id=q.get("trace_id"), before=q.get("before"),
                                              limit=q.get("limit")))
            if url.path == "/api/dlq":
                return self._json(data.dead_letters(service=q.get("service"), after=q.get("after"),
                                                    limit=q.get("limit")))
            if url.path.startswith("/api/trace/"):
                return self._json(data.trace(url.path[len("/api/trace/"):]))
            if url.path == "/contracts":
                return self._send(200, data.contracts_html().encode(), "text/html; charset=utf-8")
        except TuskError as err:
            return self._error(HTTPStatus.BAD_REQUEST, str(err))
        except Exception as err:  # the page shows it; the server keeps serving
            log.exception("console request %s failed", url.path)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")
        return self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    # -- POST ----------------------------------------------------------------------------

    def do_POST(self) -> None:
        ok, _ = self._authorised()
        if not ok:
            return self._error(HTTPStatus.UNAUTHORIZED, "a token is needed")
        given = self.headers.get("X-Tusk-CSRF", "")
        if not hmac.compare_digest(given.encode(), self.console.csrf.encode()):
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token")
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            return self._error(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin} refused")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= CONSOLE_MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        service = body.get("service")
        ids = body.get("ids")
        if not isinstance(service, str) or not (ids is None or
                                                (isinstance(ids, list) and all(isinstance(i, str) for i in ids))):
            return self._error(HTTPStatus.BAD_REQUEST, "give a service and ids (a list of strings, or null for all)")
        path = urlsplit(self.path).path
        try:
            if path == "/api/dlq/redrive":
                return self._json({"redriven": self.console.data.redrive(service, ids)})
            if path == "/api/dlq/purge":
                return self._json({"purged": self.console.data.purge(service, ids)})
        except TuskError as err:
            return self._error(HTTPStatus.BAD_REQUEST, str(err))
        except Exception as err:
            log.exception("console action %s failed", path)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")
        return self._error(HTTPStatus.NOT_FOUND, f"no such action: {path}")


__all__ = ["Console", "serve"]
