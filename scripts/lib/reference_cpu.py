"""reference_cpu.py: run openai/jukebox (the reference) on a CPU without a process group.

Imported by scripts/golden/make_prior_case.py and scripts/bench-original.py before they call
the reference. The reference asserts CUDA tensor types, calls .cuda(), makes some tensors
with device='cuda' and asks torch.distributed for its rank; these patches keep all of it on
the CPU in float32 and change nothing else it computes.
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
