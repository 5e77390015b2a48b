"""One profiled training step (bf16 autocast, AdamW): CUDA time per kernel, the largest first.

Default: Pure Mamba raw, B=8, 300 s (30,000 tokens), as used for the A/B in RESULTS.md section 7,
one tree per PYTHONPATH:

    PYTHONPATH=.old/src python3 benchmarks/profile_step.py old
    PYTHONPATH=src python3 benchmarks/profile_step.py new --model helix_raw --seconds 5 --batch 32
    PYTHONPATH=src python3 benchmarks/profile_step.py full --seconds 1 --batch 32 --set lean_blocks=false
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from helix.models import create_model

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("label", nargs="?", default="new")
p.add_argument("--model", default="pure_mamba_raw")
p.add_argument("--seconds", type=float, default=300.0)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--top", type=int, default=14)
p.add_argument("--by-op", action="store_true",
               help="also list the operators (with input shapes) by the CUDA time of their own kernels")
p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
               help="model config overrides, e.g. lean_blocks=false (values: true/false, ints, or text)")
args = p.parse_args()


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else text


overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}

torch.manual_seed(0)
model = create_model(args.model, 1313, **overrides).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
x = torch.randn(args.batch, int(args.seconds * 16000), device="cuda")
y = torch.randint(0, 1313, (args.batch,), device="cuda")


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(2):
    step()
torch.cuda.synchronize()
activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if args.by_op else [])
with profile(activities=activities, record_shapes=args.by_op) as prof:
    step()
    torch.cuda.synchronize()
rows = []
for ev in prof.key_averages():
    t = getattr(ev, "device_time_total", 0) or getattr(ev, "cuda_time_total", 0)
    if t and ev.device_type == torch.autograd.DeviceType.CUDA:
        rows.append((t / 1e3, ev.count, ev.key[:70]))
rows.sort(reverse=True)
tag = f"{args.label} {args.model} {args.seconds:g}s B={args.batch} {overrides or ''}"
print(tag, "total kernel ms", round(sum(r[0] for r in rows), 1), "kernels", sum(r[1] for r in rows))
for r in rows[:args.top]:
    print(f"{args.label:4s} {r[0]:8.2f} ms x{r[1]:<4d} {r[2]}")
if args.by_op:
    ops = [(ev.self_device_time_total / 1e3, ev.count, ev.key, str(ev.input_shapes)[:90])
           for ev in prof.key_averages(group_by_input_shape=True)
           if ev.device_type == torch.autograd.DeviceType.CPU and ev.self_device_time_total > 0]
    ops.sort(reverse=True)
    print(f"{args.label} operators by their kernels' CUDA time")
    for t, count, key, shapes in ops[:args.top]:
        print(f"{args.label:4s} {t:8.2f} ms x{count:<4d} {key[:40]:40s} {shapes}")
