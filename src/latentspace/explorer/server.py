"""Serving an explorer: the socket, uvicorn, the URL. Starlette and uvicorn are imported here
only when a server starts, so the rest of latentspace runs without the `explore` extra."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
import webbrowser
from collections.abc import Callable

from latentspace.errors import ConfigError
from latentspace.explorer.session import Explorer

__all__ = ["LOCAL_HOSTS", "bind", "require_server", "serve", "url_of"]

# Host names a loopback explorer answers to; others are refused, so that a web page cannot
# reach it through a DNS name rebound to 127.0.0.1
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def require_server() -> None:
    """A one-line error naming the extra to install when the web server's packages are missing."""
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"latentspace explore needs {' and '.join(missing)}: pip install 'latentspace[explore]'"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or a one-line error."""
    try:
        family, kind, proto = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][:3]
        # proto must say TCP: asyncio sets TCP_NODELAY only on connections of such a socket, and
        # without it every response waits ~40 ms for the client's delayed ACK (measured)
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as error:
        raise ConfigError(f"--host {host!r} cannot be used: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise ConfigError(
            f"cannot listen on {host}:{port} ({reason}): pass another --port, or --port 0 for "
            "any free one"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    explorer: Explorer,
    sock: socket.socket,
    *,
    open_browser: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Serve `explorer` on a socket from `bind` until Ctrl-C; opens a browser only when asked.
    A loopback socket answers only requests addressed to 127.0.0.1 or localhost."""
    require_server()
    import uvicorn

    from latentspace.explorer.app import create_app

    loopback = ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    app = create_app(explorer, allowed_hosts=list(LOCAL_HOSTS) if loopback else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    url = url_of(sock)
    log(f"exploring {explorer.run.path} at {url} (Ctrl-C stops it)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops cleanly, then passes the signal on
        pass
    finally:
        sock.close()
    log("explorer stopped")
