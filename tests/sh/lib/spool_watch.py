#!/usr/bin/env python3
"""Waits until a stage's spool holds N windows of its level, then signals the stage.

  spool_watch.py SPOOL_DIR JOB LEVEL N PID SIGNAL [TIMEOUT_S]

Counts the `codes` frames of level LEVEL in SPOOL_DIR/JOB/out.jbc (a frame stream:
"JBX1", u32 header length, u32 payload length, u32 CRC, MessagePack header, payload)
every few milliseconds; once there are N (the first of them may be a primed prefix,
the rest are windows), sends SIGNAL (a number or a name: KILL, TERM) to PID (several
pids: comma-separated). SPOOL_FILE=in counts in.jbc instead; WATCH_READY=FILE is created once it watches. Exit 0 when it signalled, 1 when PID ended first or the
time ran out (default 30 s).
"""
import os
import signal
import struct
import sys
import time


def count_codes(path, level):
    try:
        data = open(path, 'rb').read()
    except OSError:
        return 0
    at, n = 0, 0
    want = b'\xa5level' + bytes([level])
    while at + 16 <= len(data):
        if data[at:at + 4] != b'JBX1':
            break
        hl, pl = struct.unpack('<II', data[at + 4:at + 12])
        if at + 16 + hl + pl > len(data):
            break
        hdr = data[at + 16:at + 16 + hl]
        if b'\xa5codes' in hdr and want in hdr:
            n += 1
        at += 16 + hl + pl
    return n


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main():
    ready = os.environ.get('WATCH_READY')   # created once watching
    spool, job, level, n, pids, sig = sys.argv[1:7]
    timeout = float(sys.argv[7]) if len(sys.argv) > 7 else 30.0
    sig = int(sig) if sig.isdigit() else getattr(signal, 'SIG' + sig)
    pids = [int(p) for p in pids.split(',')]
    path = os.path.join(spool, job, os.environ.get('SPOOL_FILE', 'out') + '.jbc')
    end = time.time() + timeout
    while time.time() < end:
        if count_codes(path, int(level)) >= int(n):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            return 0
        if not any(alive(p) for p in pids):
            return 1
        if ready:
            open(ready, 'w').close()
            ready = None
        time.sleep(0.003)
    return 1


if __name__ == '__main__':
    sys.exit(main())
