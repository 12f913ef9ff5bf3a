"""``study --backend ray --address HOST:PORT``, checked before Ray is joined: the address must
answer as a Ray head's GCS does, within seconds. Given anything else (an HTTP server, Ray's
client port), ``ray.init`` retries for a minute or more and prints a C++ log line a second.

Two probes, neither starting Ray: the gRPC handshake (an HTTP/2 server answers the client's
connection preface with a SETTINGS frame; an HTTP/1 server, SSH or Redis answer otherwise or
not at all), then one GCS call (``check_alive``, what ``ray symmetric-run`` waits on) made
by Ray's own GCS client in a child process, whose timeouts and log lines stay its own.

And :func:`native_stderr_to`: while a study runs on Ray, the lines Ray's C++ core writes to
the process's stderr (file descriptor 2) go to a log file instead of the terminal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import one_line
from ..study import StudyError

CONNECT_TIMEOUT_S = 5.0
GCS_TIMEOUT_S = 5  # each of the GCS client's waits (connect, cluster id, the call)
GCS_PROBE_LIMIT_S = 30.0  # the whole child process, Python and Ray's import included
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_SETTINGS = 0x4
EMPTY_SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0
GCS_PORT_HINT = "give the port of the Ray head's GCS (ray start --head --port=..., 6379 by default)"
PROBE_UNAVAILABLE = 4  # the child's exit code when this Ray has no GCS client to probe with

# The child process: exit 0 when the GCS answers, 3 (and the reason on stderr) when it does not.
_GCS_PROBE = f"""
import sys
try:
    from ray._raylet import GcsClient
except Exception:
    sys.exit({PROBE_UNAVAILABLE})
try:
    GcsClient(address=sys.argv[1]).check_alive([], timeout={GCS_TIMEOUT_S})
except (TypeError, AttributeError):
    sys.exit({PROBE_UNAVAILABLE})
except Exception as exc:
    code = getattr(exc, "rpc_code", None)
    status = {{4: "DEADLINE_EXCEEDED", 12: "UNIMPLEMENTED", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}}.get(code, code)
    detail = str(exc).strip().rstrip(":") or type(exc).__name__
    sys.stderr.write(f"\\n{{detail}}" + (f" (gRPC status {{status}})" if status is not None else "") + "\\n")
    sys.exit(3)
"""


def parse_address(address: str) -> tuple[str, int]:
    if "://" in address:
        raise StudyError(f"--address {address}: give auto or HOST:PORT of the Ray head (ray start --head); "
                         "Ray Client (ray://) is not supported: run the study on a node of the cluster")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address {address!r}: give auto or HOST:PORT of the Ray head, e.g. 10.0.0.1:6379")
    return host.strip("[]"), int(port)


def check_address(address: str) -> None:
    """``auto``, or HOST:PORT where a Ray head's GCS answers; else one line within seconds."""
    if address == "auto":
        return
    host, port = parse_address(address)
    reply = _http2_greeting(address, host, port)
    if len(reply) < 9 or reply[3] != HTTP2_SETTINGS:
        raise StudyError(f"--address {address}: not a Ray head: the service there does not speak gRPC "
                         f"({_describe(reply)}); {GCS_PORT_HINT}")
    _probe_gcs(address)


def _http2_greeting(address: str, host: str, port: int) -> bytes:
    """The first bytes the service at host:port sends back to an HTTP/2 client's greeting."""
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StudyError(f"--address {address}: no Ray cluster answers there ({reason}); start one with "
                         f"`ray start --head --port={port}` or give the head's address") from None
    reply = b""
    with sock:
        try:
            sock.sendall(HTTP2_PREFACE + EMPTY_SETTINGS_FRAME)
            while len(reply) < 9:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
        except OSError:  # a timeout, or the service reset the connection
            pass
    return reply


def _describe(reply: bytes) -> str:
    if not reply:
        return f"it sent nothing back within {CONNECT_TIMEOUT_S:g} s"
    first = reply.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return f"it answered {first[:60]!r}"


def _probe_gcs(address: str) -> None:
    """Ray's GCS client asks the GCS there whether it is alive, in a child process."""
    env = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": str(GCS_TIMEOUT_S),
           "RAY_py_gcs_connect_timeout_s": str(GCS_TIMEOUT_S), "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], env=env, capture_output=True,
                               text=True, timeout=GCS_PROBE_LIMIT_S)
    except subprocess.TimeoutExpired:
        raise StudyError(f"--address {address}: a gRPC service answers there, but not as a Ray head's GCS "
                         f"within {GCS_PROBE_LIMIT_S:g} s; {GCS_PORT_HINT}") from None
    if probe.returncode in (0, PROBE_UNAVAILABLE):
        return
    lines = [line for line in probe.stderr.splitlines() if line.strip()]
    reason = one_line(lines[-1]) if lines else f"exit code {probe.returncode}"
    hint = ""
    if "UNAUTHENTICATED" in reason or "auth" in reason.lower():
        hint = ("; if the cluster uses Ray's token authentication, set RAY_AUTH_MODE=token and its token "
                "(RAY_AUTH_TOKEN, or ~/.ray/auth_token)")
    raise StudyError(f"--address {address}: a gRPC service answers there, but not as a Ray head's GCS "
                     f"({reason}); {GCS_PORT_HINT}{hint}")


@contextmanager
def native_stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` (appending): Ray's C++ core writes its log lines
    there, a line a second while it waits for a GCS. Python's ``sys.stderr``, when it wrote
    to that descriptor, keeps writing to the terminal, so editprobe's own lines stay visible."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(2)
    original = sys.stderr
    terminal = None
    try:
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 2)
        os.close(log)
        if _writes_to_fd2(original):
            terminal = open(os.dup(saved), "w", buffering=1, encoding=getattr(original, "encoding", None),
                            errors="backslashreplace")
            sys.stderr = terminal
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = original
        if terminal is not None:
            terminal.close()
        os.dup2(saved, 2)
        os.close(saved)


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is an OSError
        return False
