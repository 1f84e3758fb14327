"""WebSocket endpoints for benches/load/memory.sh (SCENARIO=websockets): plain sockets and the
RFC 6455 handshake by hand, so that neither end costs more than the proxy between them.

  ws.py serve PORT                 the upstream: accepts every handshake; `/terminal/flood?bytes=N`
                                   streams N bytes of binary frames then closes; any other path
                                   gets a text frame "hi" and is read (and discarded) until it ends
  ws.py hold PORT N FIFO [https]   opens N WebSockets through a proxy on PORT (Host wI.bench.test),
                                   one message each way on each, prints "N open M ok", holds them
                                   until FIFO is written
  ws.py stream PORT BYTES [https]  reads a flood of BYTES through the proxy; prints MB/s
  ws.py idle PORT N FIFO [https]   opens N keep-alive connections through the proxy, one plain GET
                                   each (the upstream answers 200 "ok": this server, or memory.sh's
                                   nginx), holds them idle until FIFO is written
"""
import asyncio
import base64
import hashlib
import os
import socket
import ssl
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FLOOD_PAYLOAD = 64 * 1024


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def masked(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


async def serve_one(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        if "upgrade" in fields:
            break
        # A plain request (keep-alive connections of the idle measurement).
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        await writer.drain()
    key = fields.get("sec-websocket-key", "").encode()
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )
    try:
        if path.startswith("/terminal/flood"):
            total = int(path.split("bytes=", 1)[1])
            chunk = frame(0x2, b"\x00" * FLOOD_PAYLOAD) * 16
            sent = 0
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write(frame(0x8, (1000).to_bytes(2, "big")))
            await writer.drain()
        else:
            writer.write(frame(0x1, b"hi"))
            await writer.drain()
            while await reader.read(65536):
                pass
    except ConnectionError:
        pass
    writer.close()


async def serve(port: int):
    server = await asyncio.start_server(serve_one, "127.0.0.1", port, backlog=4096, limit=65536)
    async with server:
        await server.serve_forever()


def open_socket(port: int, host: str, tls: bool):
    """A connection to the proxy on 127.0.0.1:PORT; over TLS (HTTP/1.1, any certificate) with
    `host` as the server name."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(s, server_hostname=host)
    return s


def connect(port: int, host: str, path: str, tls: bool):
    s = open_socket(port, host, tls)
    key = base64.b64encode(os.urandom(16))
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key.decode()}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"handshake: connection closed after {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {head[:200]!r}")
    return s, rest


def hold(port: int, n: int, fifo: str, tls: bool):
    socks, ok = [], 0
    for i in range(n):
        s, rest = connect(port, f"w{i % 1000}.bench.test", "/terminal/ws", tls)
        while len(rest) < 4:
            rest += s.recv(64)
        ok += rest[:4] == frame(0x1, b"hi")
        s.sendall(masked(0x1, b"hello"))
        socks.append(s)
    print(f"{len(socks)} open {ok} ok", flush=True)
    open(fifo).read()


def idle(port: int, n: int, fifo: str, tls: bool):
    socks, ok = [], 0
    for i in range(n):
        host = f"w{i % 1000}.bench.test"
        s = open_socket(port, host, tls)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while not (b"\r\n\r\n" in data and data.endswith(b"ok\n")):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        ok += data.startswith(b"HTTP/1.1 200")
        socks.append(s)
    print(f"{len(socks)} open {ok} ok", flush=True)
    open(fifo).read()


def stream(port: int, total: int, tls: bool):
    s, rest = connect(port, "w0.bench.test", f"/terminal/flood?bytes={total}", tls)
    got = len(rest)
    buf = bytearray(1 << 20)
    start = time.perf_counter()
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        got += n
    elapsed = time.perf_counter() - start
    if got < total:
        raise SystemExit(f"stream: {got} of {total} bytes")
    print(f"{got / elapsed / 1e6:.0f}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    elif mode == "hold":
        hold(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["https"])
    elif mode == "idle":
        idle(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["https"])
    elif mode == "stream":
        stream(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:] == ["https"])
    else:
        raise SystemExit(__doc__)
