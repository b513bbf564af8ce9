#!/usr/bin/env python3
"""set_alignment.py MODEL.safetensors ALIGN.json: store the best lyric-alignment head that
`jukebox-eval align --json ALIGN.json` measured ("best": layer, head) as the model file's
hparams alignment_layer / alignment_head (the head a run's page shows). The tensors are
copied unchanged; the header is rewritten (padded with spaces to a multiple of 8 bytes, as
safetensors writers do) and the file replaced atomically."""
import json
import os
import struct
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, align = sys.argv[1], sys.argv[2]
    best = json.load(open(align))["best"]
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header["__metadata__"]
    hp = json.loads(meta["hparams"])
    old = (hp.get("alignment_layer"), hp.get("alignment_head"))
    hp["alignment_layer"], hp["alignment_head"] = int(best["layer"]), int(best["head"])
    meta["hparams"] = json.dumps(hp, sort_keys=True, separators=(",", ":"))
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print("%s: alignment layer %s head %s -> layer %d head %d (mean rho %.3f on held-out songs)"
          % (path, old[0], old[1], hp["alignment_layer"], hp["alignment_head"], best["mean_rho"]))


if __name__ == "__main__":
    main()
