#!/usr/bin/env python3
"""Opens N authenticated, idle client connections to a gateway and holds them.

A measuring aid for the gateway's per-connection memory (docs/operations.md,
"Connections per process"), not a load generator (bench/ has those). It
plants N login sessions in Redis directly (no HTTP, no Argon2), signs an
HS256 token per connection with the gateway's JWT secret, connects and
authenticates every connection, prints one line, then keeps them open,
pinging each one every --ping-s seconds (so the idle cut never fires), until
SIGINT/SIGTERM or --hold-s.

  RTMC_JWT_SECRET=... scripts/idle_connections.py --port 7000 --count 19000 \
      --redis redis://rtmc:PASSWORD@127.0.0.1:6380 [--source 127.0.0.2]

Output: "connected N authenticated in S s" once all are authenticated.
The process needs an open-file limit above --count (ulimit -n).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import resource
import secrets
import selectors
import signal
import socket
import sys
import time
import urllib.parse


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret: str, user: str, jti: str, exp: int) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = b64url(json.dumps({"sub": user, "jti": jti, "exp": exp}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(signature)}"


def resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


def plant_sessions(redis_url: str, sessions, ttl_ms: int) -> None:
    """SET session:<jti> <user> PX ttl for every (user, jti), pipelined."""
    url = urllib.parse.urlparse(redis_url if "://" in redis_url else "redis://" + redis_url)
    conn = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    expected = 0
    out = []
    if url.password:
        out.append(resp("AUTH", urllib.parse.unquote(url.username or "default"), urllib.parse.unquote(url.password)))
        expected += 1
    for user, jti in sessions:
        out.append(resp("SET", "session:" + jti, user, "PX", str(ttl_ms)))
        expected += 1
    conn.sendall(b"".join(out))
    buffer = b""
    while buffer.count(b"\r\n") < expected:
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise SystemExit("redis closed the connection")
        buffer += chunk
    if b"-" in b"".join(line[:1] for line in buffer.split(b"\r\n")):
        raise SystemExit("redis refused a command: " + buffer[:200].decode(errors="replace"))
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--redis", default=os.environ.get("RTMC_REDIS", "127.0.0.1:6380"))
    parser.add_argument("--source", default="", help="local address to bind (e.g. 127.0.0.2)")
    parser.add_argument("--user-prefix", default="idle")
    parser.add_argument("--ping-s", type=float, default=10.0)
    parser.add_argument("--hold-s", type=float, default=0.0, help="0 = until SIGINT/SIGTERM")
    args = parser.parse_args()
    secret = os.environ.get("RTMC_JWT_SECRET")
    if not secret:
        raise SystemExit("RTMC_JWT_SECRET must hold the gateway's JWT secret")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    run = secrets.token_hex(4)
    exp = int(time.time()) + 24 * 3600
    sessions = [(f"{args.user_prefix}{run}{i}", secrets.token_hex(16)) for i in range(args.count)]
    plant_sessions(args.redis, sessions, 24 * 3600 * 1000)
    auth_lines = [
        (json.dumps({"type": "auth", "token": token(secret, user, jti, exp)}) + "\n").encode()
        for user, jti in sessions
    ]

    selector = selectors.DefaultSelector()
    inbox = {}
    pending = set()
    started = time.monotonic()
    # Connect in waves so the kernel's accept queue never overflows.
    wave = 512
    socks = []
    for first in range(0, args.count, wave):
        for i in range(first, min(first + wave, args.count)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if args.source:
                sock.bind((args.source, 0))
            sock.connect((args.host, args.port))
            sock.sendall(auth_lines[i])
            sock.setblocking(False)
            inbox[sock.fileno()] = b""
            pending.add(sock.fileno())
            selector.register(sock, selectors.EVENT_READ, i)
            socks.append(sock)
        # Read what has arrived so far before the next wave.
        drain(selector, inbox, pending, 0)
    while pending:
        if time.monotonic() - started > 120:
            raise SystemExit(f"{len(pending)} connections got no auth_ok within 120 s")
        drain(selector, inbox, pending, 0.5)
    elapsed = time.monotonic() - started
    print(f"connected {args.count} authenticated in {elapsed:.2f} s", flush=True)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    deadline = time.monotonic() + args.hold_s if args.hold_s > 0 else None
    next_ping = time.monotonic() + args.ping_s
    ping = b'{"type":"ping"}\n'
    while not stop and (deadline is None or time.monotonic() < deadline):
        drain(selector, inbox, set(), min(1.0, max(0.0, next_ping - time.monotonic())))
        if time.monotonic() >= next_ping:
            for sock in socks:
                try:
                    sock.send(ping)
                except OSError as error:
                    raise SystemExit(f"a connection was closed: {error}")
            next_ping = time.monotonic() + args.ping_s
    for sock in socks:
        sock.close()


def drain(selector, inbox, pending, timeout) -> None:
    for key, _ in selector.select(timeout):
        sock = key.fileobj
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            raise SystemExit(f"connection #{key.data} was closed by the gateway: {inbox[sock.fileno()][:200]!r}")
        inbox[sock.fileno()] += data
        if sock.fileno() in pending and b"\n" in inbox[sock.fileno()]:
            line = inbox[sock.fileno()].split(b"\n", 1)[0]
            if b'"auth_ok"' not in line:
                raise SystemExit(f"connection #{key.data}: {line[:200]!r}")
            pending.discard(sock.fileno())
            inbox[sock.fileno()] = b""
        elif sock.fileno() not in pending:
            inbox[sock.fileno()] = b""  # pongs


if __name__ == "__main__":
    sys.exit(main())
