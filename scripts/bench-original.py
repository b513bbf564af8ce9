#!/usr/bin/env python3
"""The original's sampling step on this machine, to set beside `jukebox-bench prior`.

Not run by the tests: it needs PyTorch and a checkout of openai/jukebox (the reference is
imported and called, nothing re-implemented). Random weights (the reference's own init), f32,
CPU, the full depth of the configuration. The reference's `prior.sample`, primed with --pos
codes, samples --tokens more; every call of its transformer on one new token is stamped, and
a step is the time between two stamps (the whole token: embedding, transformer, output
projection, sampling), best and median over the run; priming and conditioning are left out.

    PYTHONPATH=/path/to/jukebox python3 scripts/bench-original.py \
        --config upsampler_level_0 --pos 1000 --batch 1,4 --threads 1

Python packages: torch numpy tqdm unidecode fire librosa soundfile.
"""
import argparse
import json
import os
import sys
import time

import torch as t

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
from reference_cpu import FakeVQVAE  # noqa: E402  (also: the reference's CPU patches)
from jukebox.hparams import setup_hparams
from jukebox.make_models import make_prior


def build(config, layers):   # layers 0: the configuration's depth
    vq = setup_hparams("vqvae", dict(sample_length=1048576))
    over = dict(restore_prior="")
    if layers:
        over["prior_depth"] = layers
    hps = setup_hparams(config, over)
    prior = make_prior(hps, FakeVQVAE(vq), "cpu")
    return prior, hps


def inputs(prior, hps, N, gen):
    n_ctx = hps.n_ctx
    z_conds = []
    if prior.x_cond:
        n_above = prior.z_shapes[prior.level + 1][0]
        z_conds = [t.randint(0, prior.l_bins, (N, n_above), generator=gen)]
    y = None
    if prior.y_cond:
        n_lab = 4 + prior.y_emb.max_bow_genre_size + prior.n_tokens
        y = t.zeros((N, n_lab), dtype=t.long)
        y[:, 0] = 10 * hps.sr              # total length
        y[:, 2] = n_ctx * prior.raw_to_tokens
        y[:, 3] = 1                        # artist
        y[:, 4] = 1                        # a genre, the other slots unused
        y[:, 5:4 + prior.y_emb.max_bow_genre_size] = -1
        if prior.n_tokens:
            y[:, -prior.n_tokens:] = t.randint(1, 70, (N, prior.n_tokens), generator=gen)
    return z_conds, y


def step_ms(config, pos, N, tokens, stamps_of):
    prior, hps = build(config, 0)
    prior.eval()
    stamps = stamps_of(prior)
    gen = t.Generator().manual_seed(1)
    z_conds, y = inputs(prior, hps, N, gen)
    prime = t.randint(0, prior.l_bins, (N, pos), generator=gen)
    with t.no_grad():
        prior.sample(N, z=prime, z_conds=z_conds, y=y, temp=1.0, top_k=0, chunk_size=64,
                     sample_tokens=pos + tokens)
    gaps = sorted(1000 * (b - a) for a, b in zip(stamps, stamps[1:]))
    return gaps[0], gaps[len(gaps) // 2], hps.prior_depth


def stamp_steps(prior):
    """Stamps each call of the prior's transformer on one new token (a sampling step)."""
    stamps, forward = [], prior.prior.transformer.forward

    def stamped(x, *a, **k):
        if k.get("sample") and x.shape[1] == 1:
            stamps.append(time.perf_counter())
        return forward(x, *a, **k)

    prior.prior.transformer.forward = stamped
    return stamps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="upsampler_level_0")
    ap.add_argument("--pos", type=int, default=1000)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    t.set_num_threads(a.threads)
    for N in [int(b) for b in a.batch.split(",")]:
        best, median, depth = step_ms(a.config, a.pos, N, a.tokens, stamp_steps)
        row = {"name": "original", "config": a.config, "depth": depth, "batch": N,
               "pos": a.pos, "threads": a.threads, "ms_per_step": round(best, 1),
               "ms_per_step_median": round(median, 1), "torch": t.__version__}
        print(json.dumps(row) if a.json else
              f"original {a.config} ({depth} layers), batch {N}, position {a.pos}, "
              f"{a.threads} thread(s): {best:.1f} ms a step (median {median:.1f}; "
              f"torch {t.__version__})", flush=True)


if __name__ == "__main__":
    main()
