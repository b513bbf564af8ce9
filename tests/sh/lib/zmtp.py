"""zmtp.py: ZeroMQ's wire protocol (ZMTP 3.0, NULL mechanism) by hand, for the tests.

Independent of libzmq and of the project's C code, so a test can act as a peer that
the stages do not control: answer a status request with a reply written here, or send
garbage, cut-off greetings and malformed messages at a stage.

  python3 zmtp.py status-server PORT INFO_JSON      answers one status request (ROUTER)
  python3 zmtp.py flood HOST:PORT[,HOST:PORT...] SECONDS SEED LOG
                    sends a mix of bad traffic at every endpoint for SECONDS; writes
                    one line per fault to LOG and prints the count
  python3 zmtp.py parts HOST:PORT IDENTITY N
                    connects as a DEALER with routing id IDENTITY and sends one message
                    of N parts (a link expects 2: header, payload)
"""
import json
import random
import socket
import struct
import sys
import time


def greeting(as_server=False):
    sig = b"\xff" + b"\0" * 8 + b"\x7f"
    return sig + b"\x03\x00" + b"NULL".ljust(20, b"\0") + bytes([1 if as_server else 0]) + b"\0" * 31


def command(name, props):
    body = bytes([len(name)]) + name
    for k, v in props.items():
        body += bytes([len(k)]) + k + struct.pack(">I", len(v)) + v
    return frame(body, cmd=True)


def frame(body, more=False, cmd=False):
    flags = (1 if more else 0) | (4 if cmd else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("peer closed")
        out += chunk
    return out


def recv_frame(s):
    flags = recv_exact(s, 1)[0]
    size = struct.unpack(">Q", recv_exact(s, 8))[0] if flags & 2 else recv_exact(s, 1)[0]
    return flags, recv_exact(s, size)


def handshake(s, socket_type, as_server=False, identity=None):
    s.sendall(greeting(as_server))
    recv_exact(s, 64)
    props = {b"Socket-Type": socket_type}
    if identity is not None:
        props[b"Identity"] = identity
    s.sendall(command(b"READY", props))
    while True:   # the peer's READY
        flags, _ = recv_frame(s)
        if flags & 4:
            return


def recv_message(s):
    parts = []
    while True:
        flags, body = recv_frame(s)
        if flags & 4:
            continue   # a command (PING ...)
        parts.append(body)
        if not flags & 1:
            return parts


# ---- a little MessagePack, enough for headers
def mp_str(t):
    b = t.encode() if isinstance(t, str) else t
    if len(b) < 32:
        return bytes([0xa0 | len(b)]) + b
    if len(b) < 256:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def mp_uint(v):
    if v < 128:
        return bytes([v])
    return b"\xcf" + struct.pack(">Q", v)


def mp_map(d):
    out = bytes([0x80 | len(d)])
    for k, v in d.items():
        out += mp_str(k) + (mp_uint(v) if isinstance(v, int) else mp_str(v))
    return out


def status_server(port, info):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    srv.settimeout(20)
    c, _ = srv.accept()
    c.settimeout(20)
    handshake(c, b"ROUTER", as_server=True)
    parts = recv_message(c)
    # The request: a status header (msgpack map with "type": "status") and an empty part.
    ok = (len(parts) == 2 and mp_str("status") in parts[0] and mp_str("info") not in parts[0]
          and parts[1] == b"")
    print("request ok" if ok else "request unexpected: %r" % parts, flush=True)
    hdr = mp_map({"type": "status", "v": 1, "info": info})
    c.sendall(frame(hdr, more=True) + frame(b""))
    time.sleep(0.5)
    c.close()


def flood(endpoints, seconds, seed, log_path):
    """Every kind of bad traffic, round-robin over the endpoints, until time is up."""
    rnd = random.Random(seed)
    eps = [(h, int(p)) for h, p in (e.rsplit(":", 1) for e in endpoints.split(","))]
    kinds = ["random-bytes", "cut-greeting", "bad-signature", "wrong-version", "cut-frame",
             "garbage-header", "bad-msgpack-type", "unknown-type", "three-parts",
             "codes-bad-payload", "unknown-peer-ack", "huge-size", "wrong-socket-type"]
    n = 0
    end = time.time() + seconds
    with open(log_path, "w") as log:
        while time.time() < end:
            host, port = eps[n % len(eps)]
            kind = kinds[(n // len(eps)) % len(kinds)] if n < len(eps) * len(kinds) else rnd.choice(kinds)
            try:
                one_fault(host, port, kind, rnd)
                log.write("%s:%d %s\n" % (host, port, kind))
                n += 1
            except (OSError, EOFError) as e:
                log.write("%s:%d %s (connection: %s)\n" % (host, port, kind, e))
                n += 1
            time.sleep(0.02)
    print(n)


def one_fault(host, port, kind, rnd):
    s = socket.create_connection((host, port), timeout=2)
    try:
        if kind == "random-bytes":
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))))
        elif kind == "cut-greeting":
            s.sendall(greeting()[:rnd.randint(1, 63)])
        elif kind == "bad-signature":
            s.sendall(b"\x00" * 10 + greeting()[10:])
        elif kind == "wrong-version":
            g = bytearray(greeting())
            g[10] = 1
            s.sendall(bytes(g))
        elif kind == "wrong-socket-type":
            s.sendall(greeting())
            recv_exact(s, 64)
            s.sendall(command(b"READY", {b"Socket-Type": b"SUB"}))
            s.sendall(frame(b"hello"))
        else:
            handshake(s, b"DEALER", identity=("intruder-%d" % rnd.randint(0, 1 << 30)).encode())
            if kind == "cut-frame":
                s.sendall(b"\x01\x40" + b"x" * rnd.randint(0, 63))
            elif kind == "garbage-header":
                s.sendall(frame(bytes(rnd.getrandbits(8) for _ in range(40)), more=True) + frame(b""))
            elif kind == "bad-msgpack-type":
                s.sendall(frame(b"\x92\x01\x02", more=True) + frame(b""))
            elif kind == "unknown-type":
                s.sendall(frame(mp_map({"type": "launch-missiles", "v": 1}), more=True) + frame(b""))
            elif kind == "three-parts":
                hb = mp_map({"type": "heartbeat", "v": 1})
                s.sendall(frame(hb, more=True) + frame(b"", more=True) + frame(b"extra"))
            elif kind == "codes-bad-payload":
                h = mp_map({"type": "codes", "v": 1, "job": "ghost", "level": 1, "offset": 0,
                            "count": 4, "batch": 1, "dtype": "i32", "raw_len": 16, "seq": 0})
                s.sendall(frame(h, more=True) + frame(b"\x00\x01\x02"))
            elif kind == "unknown-peer-ack":
                h = mp_map({"type": "ack", "v": 1, "job": "nosuchjob", "seq": 7, "credit": 3})
                s.sendall(frame(h, more=True) + frame(b""))
            elif kind == "huge-size":
                s.sendall(b"\x03" + struct.pack(">Q", 1 << 62) + b"x" * 32)
            time.sleep(0.01)
    finally:
        s.close()


def parts(endpoint, identity, n):
    host, port = endpoint.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        handshake(s, b"DEALER", identity=identity.encode())
        for i in range(n):
            s.sendall(frame(b"part %d" % i, more=i < n - 1))
        time.sleep(0.2)   # let the peer read it before the connection goes
    finally:
        s.close()


if __name__ == "__main__":
    if sys.argv[1] == "status-server":
        status_server(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "flood":
        flood(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "parts":
        parts(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: zmtp.py status-server PORT INFO | flood EPS SECONDS SEED LOG | "
                 "parts HOST:PORT IDENTITY N")
