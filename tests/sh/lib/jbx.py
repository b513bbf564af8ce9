"""jbx.py: frames of docs/wire.md written by hand, for the tests.

Independent of the project's C code (MessagePack, LZ4 blocks and the CRC written here
from the spec), so a test can send what no stage would write: lies about sizes,
decompression bombs, streams cut anywhere.

  python3 jbx.py frame HEADER_JSON [PAYLOAD] >> stream.jbc
      HEADER_JSON: a JSON object; integers become MessagePack uints, strings strs,
      in the order given. PAYLOAD: "codes:1,2,3" (int32 LE, a literal-only LZ4 block),
      "zeros:N" (an LZ4 block of N zero bytes: a bomb's payload), or none.
  python3 jbx.py cut N < in > out      the first N bytes (a stream cut anywhere)
  python3 jbx.py list < stream.jbc     one line a message, in stream order:
      TYPE JOB LEVEL OFFSET COUNT (a key the header lacks: -)
"""
import json
import struct
import sys
import zlib


def mp_uint(v):
    if v < 0x80:
        return bytes([v])
    if v < 0x100:
        return b"\xcc" + bytes([v])
    if v < 0x10000:
        return b"\xcd" + struct.pack(">H", v)
    if v < 0x100000000:
        return b"\xce" + struct.pack(">I", v)
    return b"\xcf" + struct.pack(">Q", v)


def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 0x100:
        return b"\xd9" + bytes([len(b)]) + b
    if len(b) < 0x10000:
        return b"\xda" + struct.pack(">H", len(b)) + b
    return b"\xdb" + struct.pack(">I", len(b)) + b


def mp_map(d):
    n = len(d)
    out = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    for k, v in d.items():
        out += mp_str(k) + (mp_str(v) if isinstance(v, str) else mp_uint(v))
    return out


def lz4_len(n):
    return b"\xff" * (n // 255) + bytes([n % 255])


def lz4_literals(data):
    """One sequence of literals only: a valid LZ4 block of any data."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    return b"\xf0" + lz4_len(n - 15) + data


def lz4_zeros(n):
    """An LZ4 block of n >= 13 zero bytes: 1 literal, one match of offset 1, 5 literals."""
    m = n - 6            # match length (the last 5 bytes are literals, the first one too)
    ml = m - 4           # minimum match 4
    tok = (1 << 4) | (15 if ml >= 15 else ml)
    seq = bytes([tok]) + b"\x00" + struct.pack("<H", 1)
    if ml >= 15:
        seq += lz4_len(ml - 15)
    return seq + bytes([5 << 4]) + b"\x00" * 5


def frame(hdr, payload=b""):
    pre = b"JBX1" + struct.pack("<II", len(hdr), len(payload))
    crc = zlib.crc32(pre + hdr + payload) & 0xFFFFFFFF
    return pre + struct.pack("<I", crc) + hdr + payload


def mp_read(b, i):
    """One MessagePack object of the kinds headers hold (docs/wire.md 2.1): map, str, uint."""
    t = b[i]
    if t <= 0x7F:
        return t, i + 1
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        n, i = (t & 0x0F, i + 1) if t <= 0x8F else (
            (struct.unpack(">H", b[i + 1:i + 3])[0], i + 3) if t == 0xDE
            else (struct.unpack(">I", b[i + 1:i + 5])[0], i + 5))
        d = {}
        for _ in range(n):
            k, i = mp_read(b, i)
            d[k], i = mp_read(b, i)
        return d, i
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
        if t <= 0xBF:
            n, i = t & 0x1F, i + 1
        else:
            w = {0xD9: 1, 0xDA: 2, 0xDB: 4}[t]
            n, i = int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
        return b[i:i + n].decode(), i + n
    if t in (0xCC, 0xCD, 0xCE, 0xCF):
        w = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[t]
        return int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
    raise ValueError("MessagePack type 0x%02x at %d: not in a header" % (t, i))


def frames(data):
    """The headers of a stream's frames, in order."""
    i = 0
    while i + 16 <= len(data):
        if data[i:i + 4] != b"JBX1":
            raise ValueError("no frame at byte %d" % i)
        hl, pl = struct.unpack("<II", data[i + 4:i + 12])
        yield mp_read(data, i + 16)[0]
        i += 16 + hl + pl


def main():
    if sys.argv[1] == "frame":
        hdr = mp_map(json.loads(sys.argv[2]))
        payload = b""
        if len(sys.argv) > 3:
            kind, _, arg = sys.argv[3].partition(":")
            if kind == "codes":
                vals = [int(x) for x in arg.split(",")]
                payload = lz4_literals(struct.pack("<%di" % len(vals), *vals))
            elif kind == "zeros":
                payload = lz4_zeros(int(arg))
        sys.stdout.buffer.write(frame(hdr, payload))
    elif sys.argv[1] == "list":
        for h in frames(sys.stdin.buffer.read()):
            print(" ".join(str(h.get(k, "-")) for k in ("type", "job", "level", "offset", "count")))
    elif sys.argv[1] == "cut":
        data = sys.stdin.buffer.read()
        sys.stdout.buffer.write(data[: int(sys.argv[2])])


if __name__ == "__main__":
    main()
