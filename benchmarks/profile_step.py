"""One profiled 300 s training step (Pure Mamba raw, B=8, 30,000 tokens, bf16): CUDA time per kernel.

Used for the A/B in RESULTS.md section 7, one tree per PYTHONPATH:

    PYTHONPATH=.old/src python3 benchmarks/profile_step.py old
    PYTHONPATH=src python3 benchmarks/profile_step.py new
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from helix.models import create_model

torch.manual_seed(0)
model = create_model("pure_mamba_raw", 1313).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
x = torch.randn(8, 30000 * 160, device="cuda")
y = torch.randint(0, 1313, (8,), device="cuda")


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(2):
    step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    step()
    torch.cuda.synchronize()
rows = []
for ev in prof.key_averages():
    t = getattr(ev, "device_time_total", 0) or getattr(ev, "cuda_time_total", 0)
    if t:
        rows.append((t / 1e3, ev.count, ev.key[:70]))
rows.sort(reverse=True)
print(sys.argv[1], "total kernel ms", round(sum(r[0] for r in rows), 1))
for r in rows[:14]:
    print(f"{sys.argv[1]:4s} {r[0]:8.2f} ms x{r[1]:<4d} {r[2]}")
