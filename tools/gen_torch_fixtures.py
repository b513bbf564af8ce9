#!/usr/bin/python3
"""Writes tests/fixtures/torch/: small torch.save files for what the golden
checkpoints do not cover, each with the tensors it must give as a safetensors
file (<base>.expect.safetensors, written here without the safetensors package).

Run with PyTorch installed (Debian: apt-get install python3-torch; the fixtures
were made with its 1.13):   /usr/bin/python3 tools/gen_torch_fixtures.py
Development only: nothing at build or run time needs Python.

Fixtures (legacy = _use_new_zipfile_serialization=False, zip = default):
  bf16_i64[.zip]       BFloat16, Int64, Int32, Float64, Half storages; an nn.Parameter
                       (torch._utils._rebuild_parameter); an empty tensor; a 0-d tensor
  offsets[.zip]        views with storage offsets into one shared storage: row slices,
                       a column slice (offset + strides), a transposed slice, a stride-2 view
  offsets.zip64        offsets.zip rewritten as a zip64 archive (as torch writes files over
                       4 GiB): sizes and offsets in zip64 extra fields, zip64 end records;
                       checked by loading it with torch.load
  module_prefix.zip    every key starts with 'module.' (DistributedDataParallel)
  nested_hps[.zip]     hps with tuples, nested dicts, None, bools, floats, lists of tuples,
                       numpy scalars (int64, int32, uint8, float64, float32, bool);
                       'opt' is a real Adam state_dict (tensors, ints, floats) to be skipped
  bare_state_dict.zip  torch.save(state_dict) with no 'model'/'hps' wrapper
  vqvae_mismatch.zip   the golden vqvae_tiny checkpoint with one tensor missing
                       (decoders.0.out.bias), one extra (extra.weight), one of the wrong
                       shape (bottleneck.level_blocks.1.k transposed) and one of the wrong
                       dtype (bottleneck.level_blocks.2.k as I64): the converter must list them;
                       bottleneck.level_blocks.0.k as F16 is accepted (a float tensor)
  bad_cyclic_hps, bad_shared_hps.zip   hps with a self-containing list / a list shared
                       2^40 ways: must be refused with a message, quickly
  legacy_view          a legacy file whose persistent ids carry storage views
                       (view_key, offset, size), as torch <= 1.0 wrote them; written with
                       pickle + a persistent_id hook, checked by loading it with torch.load
"""
import collections
import io
import json
import os
import pickle
import struct
import sys

import numpy
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures', 'torch')
DT = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.int64: 'I64',
      torch.int32: 'I32', torch.float64: 'F64', torch.int16: 'I16', torch.int8: 'I8',
      torch.uint8: 'U8', torch.bool: 'BOOL'}


def raw(t):
    t = t.detach().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_expect(path, sd, meta):
    hdr, blobs, off = {}, [], 0
    for k, t in sd.items():
        b = raw(t)
        hdr[k] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        hdr['__metadata__'] = meta
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def save_both(base, obj, zip_only=False):
    if not zip_only:
        torch.save(obj, os.path.join(OUT, base + '.pth.tar'), _use_new_zipfile_serialization=False)
    torch.save(obj, os.path.join(OUT, base + '.zip.pth.tar'))


def check(path, sd):
    got = torch.load(path)
    m = got['model'] if 'model' in got else got
    m = {k[7:] if k.startswith('module.') else k: v for k, v in m.items()}
    for k, v in sd.items():
        assert torch.equal(m[k], v) and m[k].dtype == v.dtype, (path, k)


def write_zip64(src, dst):
    import zipfile
    import zlib
    recs = []
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            recs.append((info.filename, z.read(info.filename)))
    out = bytearray()
    central = bytearray()
    for name, data in recs:
        nb = name.encode()
        crc = zlib.crc32(data) & 0xffffffff
        off = len(out)
        extra = struct.pack('<HHQQ', 1, 16, len(data), len(data))
        pad = (-(len(out) + 30 + len(nb) + len(extra) + 4)) % 64   # 64-byte aligned data
        extra += struct.pack('<HH', 0x1234, pad) + b'Z' * pad
        out += struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0, 0, 0, 0x21, crc,
                           0xffffffff, 0xffffffff, len(nb), len(extra)) + nb + extra + data
        cx = struct.pack('<HHQQQ', 1, 24, len(data), len(data), off)
        central += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0, 0, 0, 0x21, crc,
                               0xffffffff, 0xffffffff, len(nb), len(cx), 0, 0, 0, 0,
                               0xffffffff) + nb + cx
    cd_off = len(out)
    out += central
    z64 = len(out)
    out += struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 45, 45, 0, 0, len(recs), len(recs),
                       len(central), cd_off)
    out += struct.pack('<IIQI', 0x07064b50, 0, z64, 1)
    out += struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    with open(dst, 'wb') as f:
        f.write(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)

    # dtypes
    sd = collections.OrderedDict()
    sd['emb.weight'] = torch.randn(5, 3, generator=g).to(torch.bfloat16)
    sd['ids'] = torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4) * 1000000007
    sd['i32'] = torch.arange(6, dtype=torch.int32) - 3
    sd['f64'] = torch.randn(2, 2, generator=g, dtype=torch.float64)
    sd['half.w'] = torch.randn(4, 2, generator=g).half()
    sd['param'] = torch.nn.Parameter(torch.randn(3, generator=g))
    sd['empty'] = torch.zeros(0, 4)
    sd['scalar'] = torch.tensor(2.5)
    obj = {'hps': None, 'model': sd, 'opt': None, 'step': 7}
    save_both('bf16_i64', obj)
    write_expect(os.path.join(OUT, 'bf16_i64.expect.safetensors'), sd, None)

    # offsets and strides into one storage
    big = torch.arange(60, dtype=torch.float32).reshape(6, 10) + 0.25
    sd = collections.OrderedDict()
    sd['rows'] = big[2:4]                 # offset 20, contiguous
    sd['cols'] = big[1:5, 3:7]            # offset 13, strides (10, 1)
    sd['colsT'] = big[1:5, 3:7].t()       # offset 13, strides (1, 10)
    sd['every2'] = big.view(-1)[5::2]     # offset 5, stride 2
    sd['whole'] = big
    sd['bias.a'] = big.view(-1)[40:44]
    sd['bias.b'] = big.view(-1)[42:46]    # overlaps bias.a
    for k in sd:
        assert sd[k].storage().data_ptr() == big.storage().data_ptr()
    obj = {'hps': {'levels': 1}, 'model': sd, 'opt': None, 'step': 1}
    save_both('offsets', obj)
    write_expect(os.path.join(OUT, 'offsets.expect.safetensors'),
                 {k: v.contiguous() for k, v in sd.items()}, {'hps': json.dumps({'levels': 1})})

    # module. prefix on a zip
    sd = collections.OrderedDict()
    sd['module.prior.x_emb.weight'] = torch.randn(4, 3, generator=g)
    sd['module.prior.x_out.weight'] = sd['module.prior.x_emb.weight']   # tied
    sd['module.bottleneck.level_blocks.0.k'] = torch.randn(8, 2, generator=g)
    torch.save({'hps': {'name': 'm'}, 'model': sd, 'opt': None, 'step': 3},
               os.path.join(OUT, 'module_prefix.zip.pth.tar'))
    write_expect(os.path.join(OUT, 'module.expect.safetensors'),
                 {k[7:]: v for k, v in sd.items()}, {'hps': json.dumps({'name': 'm'})})
    os.replace(os.path.join(OUT, 'module.expect.safetensors'),
               os.path.join(OUT, 'module_prefix.expect.safetensors'))

    # nested hps, a real optimizer state
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 3, generator=g))
        lin.bias.copy_(torch.randn(2, generator=g))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    hps = {'levels': 3, 'downs_t': (3, 2, 2), 'strides_t': [2, 2, 2], 'alignment_head': None,
           'fp16': True, 'lr': 0.00015, 'eps': 1e-08, 'name': 'prior_5b', 'spread': None,
           't_ranges': ((2646000.0, 26460000.0), (0.0, 1.0)), 'empty': (), 'big': 2 ** 40,
           'neg': -7, 'vqvae': {'levels': 3, 'l_bins': 2048, 'hvqvae_multipliers': (2, 1, 1),
                                'nested': {'deeper': [None, True, False, 'x']}}}
    # numpy numbers, as a training script leaves them (sample_length from np.prod)
    np_vals = {'sample_length': numpy.int64(1048576), 'np_f64': numpy.float64(0.5),
               'np_f32': numpy.float32(0.25), 'np_bool': numpy.bool_(True),
               'np_i32': numpy.int32(-3), 'np_u8': numpy.uint8(200)}
    sd = collections.OrderedDict((k, v.detach().clone()) for k, v in lin.state_dict().items())
    obj = {'hps': {**hps, **np_vals}, 'model': sd, 'opt': opt.state_dict(), 'step': 12345,
           'loss': 1.5}
    save_both('nested_hps', obj)
    plain = {k: v.item() for k, v in np_vals.items()}
    write_expect(os.path.join(OUT, 'nested_hps.expect.safetensors'), sd,
                 {'hps': json.dumps({**hps, **plain})})

    # a bare state dict
    sd = collections.OrderedDict([('a.weight', torch.randn(2, 2, generator=g)),
                                  ('a.bias', torch.randn(2, generator=g))])
    torch.save(sd, os.path.join(OUT, 'bare_state_dict.zip.pth.tar'))
    write_expect(os.path.join(OUT, 'bare_state_dict.expect.safetensors'), sd, None)

    # legacy storage views, written the way torch <= 1.0 did
    root = torch.arange(12, dtype=torch.float32) * 1.5
    sd = collections.OrderedDict([('v1', root[4:10].reshape(2, 3)), ('v2', root[8:12]),
                                  ('whole', root)])
    path = os.path.join(OUT, 'legacy_view.pth.tar')
    with open(path, 'wb') as f:
        def rebuild_args(t, view_key, view_off, view_size):
            return (t, view_key, view_off, view_size)

        class P(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == 'VIEW':
                    _, key, off, size = obj
                    vm = None if key == 'root' else (key, off, size)
                    return ('storage', torch.FloatStorage, 'root', 'cpu', 12, vm)
                return None

        class Tensor:   # pickles as _rebuild_tensor_v2(storage-view, offset, size, stride, ...)
            def __init__(self, view, size, stride):
                self.a = (view, 0, size, stride, False, collections.OrderedDict())

            def __reduce__(self):
                return (torch._utils._rebuild_tensor_v2, self.a)

        model = collections.OrderedDict([
            ('v1', Tensor(('VIEW', 'view1', 4, 6), (2, 3), (3, 1))),
            ('v2', Tensor(('VIEW', 'view2', 8, 4), (4,), (1,))),
            ('whole', Tensor(('VIEW', 'root', 0, 12), (12,), (1,)))])
        for o in (0x1950a86a20f9469cfc6c, 1001,
                  {'protocol_version': 1001, 'little_endian': True,
                   'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
            pickle.dump(o, f, protocol=2)
        P(f, protocol=2).dump({'hps': None, 'model': model, 'opt': None, 'step': 0})
        pickle.dump(['root'], f, protocol=2)
        f.write(struct.pack('<q', 12) + root.numpy().tobytes())
    write_expect(os.path.join(OUT, 'legacy_view.expect.safetensors'),
                 {k: v.contiguous() for k, v in sd.items()}, None)

    # a checkpoint that does not match its own hps
    gold = os.path.join(os.path.dirname(OUT), '..', 'golden', 'checkpoints', 'vqvae_tiny.pth.tar')
    ck = torch.load(gold)
    m = ck['model']
    del m['decoders.0.out.bias']
    m['extra.weight'] = torch.zeros(2, 2)
    m['bottleneck.level_blocks.1.k'] = m['bottleneck.level_blocks.1.k'].t().contiguous()
    m['bottleneck.level_blocks.2.k'] = m['bottleneck.level_blocks.2.k'].long()
    m['bottleneck.level_blocks.0.k'] = m['bottleneck.level_blocks.0.k'].half()   # fine: a float
    torch.save(ck, os.path.join(OUT, 'vqvae_mismatch.zip.pth.tar'))

    # hps the reader must refuse cleanly: a list that contains itself, and a list shared
    # 2^40 ways (tiny as a pickle thanks to the memo)
    cyc = []
    cyc.append(cyc)
    torch.save({'hps': {'loop': cyc}, 'model': collections.OrderedDict(), 'opt': None},
               os.path.join(OUT, 'bad_cyclic_hps.pth.tar'), _use_new_zipfile_serialization=False)
    shared = [1]
    for _ in range(40):
        shared = [shared, shared]
    torch.save({'hps': {'wide': shared}, 'model': collections.OrderedDict(), 'opt': None},
               os.path.join(OUT, 'bad_shared_hps.zip.pth.tar'))

    # zip64: the zip torch writes for files over 4 GiB, rebuilt small. Same records as
    # offsets.zip.pth.tar, every size and offset in zip64 extra fields, zip64 end records.
    write_zip64(os.path.join(OUT, 'offsets.zip.pth.tar'), os.path.join(OUT, 'offsets.zip64.pth.tar'))
    got = torch.load(os.path.join(OUT, 'offsets.zip64.pth.tar'))
    assert torch.equal(got['model']['colsT'], big[1:5, 3:7].t())

    for name, ref in (('bf16_i64.pth.tar', 'bf16_i64'), ('bf16_i64.zip.pth.tar', 'bf16_i64'),
                      ('offsets.pth.tar', None), ('offsets.zip.pth.tar', None),
                      ('legacy_view.pth.tar', None), ('nested_hps.pth.tar', None)):
        got = torch.load(os.path.join(OUT, name))
        assert isinstance(got, dict) and 'model' in got, name
    check(os.path.join(OUT, 'legacy_view.pth.tar'), sd)
    print('wrote', sorted(os.listdir(OUT)), file=sys.stderr)


if __name__ == '__main__':
    main()
