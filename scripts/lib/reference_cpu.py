"""reference_cpu.py: run openai/jukebox (the reference) on a CPU without a process group.

Imported by scripts/golden/make_prior_case.py and scripts/bench-original.py before they call
the reference. The reference asserts CUDA tensor types, calls .cuda(), makes some tensors
with device='cuda' and asks torch.distributed for its rank; these patches keep all of it on
the CPU in float32 and change nothing else it computes. FakeVQVAE stands in for a VQ-VAE
where only its shapes matter (building a prior).
"""
import torch as t

import jukebox.utils.dist_adapter as dist

dist.get_rank = lambda: 0
t.cuda.LongTensor = t.LongTensor
t.Tensor.cuda = lambda self, *a, **k: self
t.nn.Module.cuda = lambda self, *a, **k: self


def _on_cpu(factory):
    def made(*a, **k):
        if str(k.get("device", "")).startswith("cuda"):
            k["device"] = "cpu"
        return factory(*a, **k)
    return made


for _name in ("arange", "zeros", "ones", "empty", "tensor", "randn", "full"):
    setattr(t, _name, _on_cpu(getattr(t, _name)))


class FakeVQVAE:
    """What make_prior reads of a VQ-VAE: its codebook size and code shapes. vq: the VQ-VAE's
    hyper-parameters (a dict, or the reference's Hyperparams, which is one)."""

    def __init__(self, vq):
        self.l_bins = vq["l_bins"]
        self.downs_t, self.strides_t = vq["downs_t"], vq["strides_t"]
        hop, self.z_shapes = 1, []
        for d, s in zip(self.downs_t, self.strides_t):
            hop *= s ** d
            self.z_shapes.append((vq["sample_length"] // hop,))
        self.encode = self.decode = None
