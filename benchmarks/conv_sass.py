"""Compile the causal conv's forward kernels for an H200 (sm_90) on a machine without a GPU and count
their SASS: loads by width, stores, shuffles, shared memory, barriers, instructions, registers.

    PYTHONPATH=src python benchmarks/conv_sass.py [--dump DIR] [--L 30000] [--K 4] [--fp32] [--lengths]

Run it with the Triton version the GPU uses (3.6: layouts and lowering differ between releases).
Both kernels get the runtime's specialisation at the 300 s BiMamba conv: B=8, C=1,024, L=30,000, bf16
x and out, fp32 weight and bias, pointers and the integer arguments divisible by 16 marked so (BIDIR is
never specialised), HAS_LEN False, the (4, 256) tile over 2 warps. The options compile other cases
(an L not a multiple of 16 leaves L and the strides without divisibility). Asserts nothing; ``--dump``
writes each kernel's ttgir, ptx and sass for reading.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from helix.ops.causal_conv import triton as conv  # noqa: E402

B, C = 8, 1024
LOADS = ("LDG.E.U16", "LDG.E", "LDG.E.64", "LDG.E.128")  # 2, 4, 8, 16 bytes (modifiers after .E dropped)
SHOWN = ("STG", "SHFL", "LDS", "STS", "BAR", "MUFU", "FFMA", "BRA")


def compile_sm90(fn, L: int, meta: dict, x_dtype: str, num_warps: int):
    """``fn`` as the runtime specialises it for contiguous (B, C, L) x (Triton 3.6's ASTSource API)."""
    ints = {"C": C, "L": L, "HALF": C // 2, "BIDIR": 1, "sx_b": C * L, "sx_c": L}
    sig, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if fn.params[i].is_constexpr:
            sig[name], consts[name] = "constexpr", meta[name]
        elif name.endswith("_ptr"):
            sig[name] = {"x_ptr": x_dtype, "out_ptr": x_dtype, "len_ptr": "*i64"}.get(name, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if ints[name] % 16 == 0 and name not in fn.do_not_specialize:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def _tool(name: str, compiled, *args: str) -> str:
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([path, *args, f.name], capture_output=True, text=True, check=True).stdout


def counts(sass: str) -> list[collections.Counter]:
    """Opcodes (loads with their width: LDG.E, LDG.E.64, ... with cache and scope modifiers dropped) per
    region between branch labels: at the default arguments ``_conv_fwd``'s first two are its causal
    groups (with the prologue) and its anti-causal groups, each ending in EXIT, then its taps code."""
    regions = [collections.Counter()]
    for line in sass.splitlines():
        if re.match(r"^\s*\.L_x_\d+:", line):
            regions.append(collections.Counter())
            continue
        ops = regions[-1]
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if not m:
            continue
        op = m.group(1)
        if op.startswith("LDG"):
            parts = op.split(".")
            width = [p for p in parts[2:] if p in ("U8", "S8", "U16", "S16", "64", "128")]
            op = "LDG.E" + ("." + width[0] if width else "")
        ops[op.split(".")[0] if not op.startswith("LDG") else op] += 1
    return [r for r in regions if r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dump", help="write each kernel's ttgir, ptx and sass here")
    p.add_argument("--L", type=int, default=30000)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--fp32", action="store_true", help="fp32 x and out (default bf16)")
    p.add_argument("--lengths", action="store_true", help="HAS_LEN=True")
    args = p.parse_args()
    meta = {"K": args.K, "BC": conv._BC, "BT": conv.conv_tiles(args.L)[0], "HAS_LEN": args.lengths,
            "ALIGNED": args.L % 8 == 0}  # conv_forward's rule for contiguous x
    warps = conv._fwd_warps(meta["BT"])
    x_dtype = "*fp32" if args.fp32 else "*bf16"
    print(f"triton {triton.__version__}, sm_90, B={B} C={C} L={args.L} K={args.K} x {x_dtype[1:]} bidirectional, "
          f"HAS_LEN {args.lengths}, tile ({meta['BC']}, {meta['BT']}), {warps} warps")
    for name, fn in (("_conv_fwd_taps", conv._conv_fwd_taps), ("_conv_fwd", conv._conv_fwd)):
        compiled = compile_sm90(fn, args.L, meta, x_dtype, warps)
        sass = _tool("nvdisasm", compiled, "-c")
        regions = counts(sass)
        res = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", _tool("cuobjdump", compiled, "-res-usage"))
        print(f"{name}: REG {res.group(1)} SHARED {res.group(3)} LOCAL {res.group(4)}, "
              f"convert_layout {compiled.asm['ttgir'].count('convert_layout')} (ttgir)")
        for label, ops in [("kernel", sum(regions, collections.Counter()))] + [
                (f"region {i}", r) for i, r in enumerate(regions)] * (len(regions) > 1):
            loads = " ".join(f"{k} {ops[k]}" for k in LOADS)
            other = " ".join(f"{k} {ops[k]}" for k in SHOWN)
            print(f"  {label:9s} total {sum(ops.values()):4d} | {loads} | {other}")
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            for key, text in (("ttgir", compiled.asm["ttgir"]), ("ptx", compiled.asm["ptx"]), ("sass", sass)):
                with open(os.path.join(args.dump, f"{name}.{key}"), "w") as f:
                    f.write(text)


if __name__ == "__main__":
    main()
