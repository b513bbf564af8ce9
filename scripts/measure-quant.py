#!/usr/bin/env python3
"""What n-bit weights would do to the accuracy of the golden prior cases, before writing a kernel.

Not run by the tests. Copies tests/golden to DIR, rounds every transformer matrix that
`--weights int8` quantizes (c_attn, c_enc_kv, c_proj, mlp c_fc, mlp c_proj) to BITS bits per
column and group of GROUP rows of k, writes them back dequantized in their own dtype, and runs
build/tests/test_jb_prior_weights in DIR: its "stored" rows then measure the rounded weights
against the reference (logits error relative to their rms, teacher-forced top-1, free-running
greedy tokens). With 8 bits, groups of 64, symmetric, it reproduces `--weights int8` exactly,
which checks the method.

    python3 scripts/measure-quant.py --bits 4 --group 32 --mode asym [--dir /tmp/quant]

Modes: sym (q in -(2^(b-1)-1) .. 2^(b-1)-1, scale = max|w| / qmax, as int8) or asym
(q in 0 .. 2^b-1 between the group's min and max). Python packages: numpy, safetensors.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

MATRIX = re.compile(r"_attn_mods\.\d+\.(attn\.c_attn|attn\.c_enc_kv|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.w$")
ROW = re.compile(r"^\s+(\S+)\s+stored packed logits error: rms (\S+), max (\S+) \(of ref rms \S+\), "
                 r"top-1 (\d+)/(\d+), greedy (\d+)/(\d+)")


def round_groups(w, bits, group, mode):
    """w: (K, N) float64; groups of `group` rows, one scale (and offset) per column."""
    out = np.empty_like(w)
    for k0 in range(0, w.shape[0], group):
        g = w[k0:k0 + group]
        if mode == "sym":
            qmax = 2 ** (bits - 1) - 1
            s = np.abs(g).max(axis=0) / qmax
            s[s == 0] = 1
            q = np.clip(np.sign(g) * np.floor(np.abs(g) / s + 0.5), -qmax, qmax)
            out[k0:k0 + group] = q * s
        else:
            lo, hi = g.min(axis=0), g.max(axis=0)
            s = (hi - lo) / (2 ** bits - 1)
            s[s == 0] = 1
            q = np.clip(np.floor((g - lo) / s + 0.5), 0, 2 ** bits - 1)
            out[k0:k0 + group] = lo + q * s
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--mode", choices=("sym", "asym"), default="sym")
    ap.add_argument("--dir", default="/tmp/jukebox-quant")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    test = os.path.join(root, "build", "tests", "test_jb_prior_weights")
    if not os.access(test, os.X_OK):
        sys.exit(f"{test}: not built (make {os.path.relpath(test, root)})")
    golden = os.path.join(a.dir, "tests", "golden")
    shutil.rmtree(a.dir, ignore_errors=True)
    shutil.copytree(os.path.join(root, "tests", "golden"), golden)
    for case in sorted(os.listdir(golden)):
        path = os.path.join(golden, case, "model.safetensors")
        if not os.path.exists(path):
            continue
        with safe_open(path, "np") as f:
            meta = f.metadata()
        tensors = load_file(path)
        for name, t in tensors.items():
            if MATRIX.search(name):
                tensors[name] = round_groups(t.astype(np.float64), a.bits, a.group, a.mode).astype(t.dtype)
        save_file(tensors, path, metadata=meta)
    run = subprocess.run([test], cwd=a.dir, capture_output=True, text=True)
    tot = [0, 0, 0, 0]
    print(f"{a.bits} bits, groups of {a.group}, {a.mode}")
    for line in run.stdout.splitlines() + run.stderr.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        case, rms, mx, t1, tn, g, gn = m.groups()
        print(f"  {case:26s} logits error rms {rms} max {mx}  top-1 {t1}/{tn}  greedy {g}/{gn}")
        for i, v in enumerate((t1, tn, g, gn)):
            tot[i] += int(v)
    if not tot[1]:
        sys.exit("no 'stored packed' rows in the test's output")
    print(f"  all: teacher-forced top-1 {tot[0]}/{tot[1]} ({100 * tot[0] / tot[1]:.1f} %), "
          f"greedy {tot[2]}/{tot[3]} ({100 * tot[2] / tot[3]:.1f} %)")


if __name__ == "__main__":
    main()
