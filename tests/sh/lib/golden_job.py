#!/usr/bin/env python3
"""Helpers for the process tests: read a golden pipeline case without numpy.

  golden_job.py args CASE SAMPLE        jukebox-job options reproducing one golden sample
  golden_job.py codes CASE SAMPLE KEY   the golden codes of KEY (e.g. zs.0) for that sample
  golden_job.py wav CASE KEY SAMPLE OUT write a float32 WAV of an audio tensor (e.g. prompt_audio)
  golden_job.py float CASE KEY          a scalar from case.json (e.g. prompt_length)
"""
import json
import struct
import sys


def load_tensor(path, key):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        head = json.loads(f.read(n))
        v = head[key]
        f.seek(8 + n + v['data_offsets'][0])
        raw = f.read(v['data_offsets'][1] - v['data_offsets'][0])
    fmt = {'I32': 'i', 'F32': 'f'}[v['dtype']]
    return v['shape'], struct.unpack('<%d%s' % (len(raw) // 4, fmt), raw)


def main():
    cmd, case = sys.argv[1], sys.argv[2]
    c = json.load(open(case + '/case.json'))
    if cmd == 'args':
        s = int(sys.argv[3])
        meta = c['metas'][s]
        args = ['--total-seconds', repr(meta['total_length'] / 44100.0),
                '--seconds', repr(c['sample_length'] / 44100.0)]
        samp = c['sampling']
        args += ['--temp', ','.join(repr(samp[str(l)]['temp']) for l in range(3)),
                 '--top-k', ','.join(str(samp[str(l)]['top_k']) for l in range(3)),
                 '--chunk', ','.join(str(samp[str(l)]['chunk_size']) for l in range(3)),
                 '--max-batch', ','.join(str(samp[str(l)]['max_batch_size']) for l in range(3)),
                 '--hop-fraction', ','.join(repr(h) for h in c['hop_fraction']),
                 '--seed', str(c.get('seed', 0))]
        for l in range(3):
            pl = meta['per_level'][str(l)]
            args += ['--artist-id', '%d=%d' % (l, pl['artist_id'])]
            if pl['genre_ids']:
                args += ['--genre-ids', '%d=%s' % (l, ','.join(str(g) for g in pl['genre_ids']))]
        if meta.get('lyrics'):
            args += ['--lyrics', meta['lyrics']]
        print('\0'.join(args), end='')
    elif cmd == 'codes':
        s, key = int(sys.argv[3]), sys.argv[4]
        shape, vals = load_tensor(case + '/io.safetensors', key)
        print(' '.join(str(x) for x in vals[s * shape[1]:(s + 1) * shape[1]]))
    elif cmd == 'wav':
        key, s, out = sys.argv[3], int(sys.argv[4]), sys.argv[5]
        shape, vals = load_tensor(case + '/io.safetensors', key)
        n = shape[1]
        data = struct.pack('<%df' % n, *vals[s * n:(s + 1) * n])
        hdr = b'RIFF' + struct.pack('<I', 36 + len(data)) + b'WAVE'
        hdr += b'fmt ' + struct.pack('<IHHIIHH', 16, 3, 1, 44100, 44100 * 4, 4, 32)
        hdr += b'data' + struct.pack('<I', len(data))
        open(out, 'wb').write(hdr + data)
    elif cmd == 'float':
        print(repr(c[sys.argv[3]]))


if __name__ == '__main__':
    main()
