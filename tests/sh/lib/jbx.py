"""jbx.py: frames of docs/wire.md written by hand, for the tests.

Independent of the project's C code (MessagePack, LZ4 blocks and the CRC written here
from the spec), so a test can send what no stage would write: lies about sizes,
decompression bombs, streams cut anywhere.

  python3 jbx.py frame HEADER_JSON [PAYLOAD] >> stream.jbc
      HEADER_JSON: a JSON object; integers become MessagePack uints, strings strs,
      in the order given. PAYLOAD: "codes:1,2,3" (int32 LE, a literal-only LZ4 block),
      "zeros:N" (an LZ4 block of N zero bytes: a bomb's payload), or none.
  python3 jbx.py cut N < in > out      the first N bytes (a stream cut anywhere)
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
    elif sys.argv[1] == "cut":
        data = sys.stdin.buffer.read()
        sys.stdout.buffer.write(data[: int(sys.argv[2])])


if __name__ == "__main__":
    main()
