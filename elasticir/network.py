"""Is the network (or a Ray cluster) usable? Answered fast, so offline runs and wrong addresses fail in seconds
instead of retrying for minutes."""

from __future__ import annotations

import os
import socket
import time

from elasticir.errors import ElasticIRError

RAY_EXTRA = "pip install 'elasticir[distributed]'"
OFFLINE_VARIABLES = ("ELASTICIR_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def network_allowed(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """False when an offline variable is set to 1 or `host` cannot be reached on port 443."""
    if any(os.environ.get(name) == "1" for name in OFFLINE_VARIABLES):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


PROBE_TIMEOUT_S = 5.0  # a --ray-address that does not answer as a Ray (gRPC) server in this time is refused
# the HTTP/2 client preface and an empty SETTINGS frame: a Ray GCS or Ray Client server (both gRPC) answers with
# its own SETTINGS frame at once; a closed port, a silent host or a server of another protocol does not
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe_address(address: str | None, flag: str = "--ray-address", timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse a Ray address where no Ray server answers, within `timeout` seconds in all (ray.init would retry
    for minutes without a word): a TCP connect to HOST:PORT (also ray://HOST:PORT) and an HTTP/2 handshake, which
    Ray's gRPC servers answer at once. `auto`, `local` and None are Ray's own lookups and are left to it."""
    if not address or address.strip() in ("auto", "local"):
        return
    text = address.strip()
    target = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ElasticIRError(f"{flag} {address}: not a Ray address; write HOST:PORT (e.g. 10.0.0.5:6379, the "
                             "address `ray start --head` prints), ray://HOST:PORT, or leave it out for a local cluster")
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(_H2_PREFACE)
            reply = b""
            while len(reply) < 9:  # one frame header: length (3), type (1), flags (1), stream (4)
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(9 - len(reply))
                if not chunk:
                    raise ConnectionResetError(0, "the connection was closed without an answer")
                reply += chunk
        if reply[3] != 0x4:
            raise ConnectionError(0, "the server there does not speak gRPC (no HTTP/2 SETTINGS frame)")
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        raise ElasticIRError(f"{flag} {address}: no Ray cluster answers there (probe of {host}:{port} failed "
                             f"within {timeout:g} s: {reason}). Fix: start it with `ray start --head --port {port}` "
                             f"on {host}, correct the address, or leave {flag} out for a local cluster") from None


def require_ray():
    """The ray module, or one clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ElasticIRError(f"--executor ray needs Ray, which is not installed here: {RAY_EXTRA} "
                             "(or use --executor local)") from None
    return ray
