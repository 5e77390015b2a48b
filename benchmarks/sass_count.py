"""Compile the scan kernels for an H100 (sm_90) on a machine without a GPU and count SASS opcodes.

    python benchmarks/sass_count.py [fwd] [bwd] [fwd_columns] [bwd_gluon] [chunk_states] [bwd_chunk_states]
        [both_chunk_states] [fwd_gluon] [fwd_serial] [fwd_serial_gluon]   (MAXNREG=128 caps ptxas's
    registers; the library's defaults otherwise: SMEM=none (or acc+bc) keeps the Gluon backward's
    accumulators in registers (or puts B, C in shared memory too), SHIFT_A=0 gives it the second
    exponential, PREFETCH=0 compiles the Gluon scans with ``ScanConfig(prefetch=False)``, FULL_N=0 masks dA)

Uses the kernels' real specialisation for the BiMamba block at 300 s (B=8, 2 x 512 channels, N=32,
bf16, strides divisible by 16, unit strides constant), Triton's bundled ``nvdisasm``, and reports
the whole kernel and its channel loop (the largest backward branch) per opcode. Run it with the
Triton version the GPU uses (the lent H100 has 3.6: ``pip install triton==3.6.0`` in a spare venv):
layouts and the scan lowering differ between releases. It asserts nothing; it is how the forward-only
scan (docs/kernels.md, v5) was found: a ``reverse=True`` scan compiled to ~700 shuffles.
"""

from __future__ import annotations

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
from helix.ops.selective_scan import chunk_state, columns, gluon_bwd, triton as kernels  # noqa: E402

L, D, N = 30000, 1024, 32
BC_ROWS = 160  # x_dbl rows per batch element: 2 dt_rank + 4 N
STRIDES = {
    "su_b": D * L, "su_d": L, "su_l": 1, "sdl_b": D * L, "sdl_d": L, "sdl_l": 1,
    "sB_b": BC_ROWS * L, "sB_g": N * L, "sB_n": L, "sB_l": 1,
    "sC_b": BC_ROWS * L, "sC_g": N * L, "sC_n": L, "sC_l": 1,
    "sz_b": D * L, "sz_d": L, "sz_l": 1, "so_b": D * L, "so_d": L, "so_l": 1, "sg_b": D * L, "sg_d": L, "sg_l": 1,
}
INTS = {"L": L, "D_GROUP": D // 2, "N": N, "n_chunks": -(-L // 32), "L_BC": L}
BF16 = {"u_ptr", "dl_ptr", "B_ptr", "C_ptr", "z_ptr", "out_ptr", "dout_ptr", "du_ptr", "ddl_ptr", "dz_ptr", "y_ptr"}
META = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BIDIR=True, REVERSE=False,
            BLOCK_T=32, BLOCK_N=32, DG=128, HAS_LEN=False, WRITE_Y=True,
            ACC_SMEM=os.environ.get("SMEM", "acc") != "none", BC_SMEM=os.environ.get("SMEM") == "acc+bc",
            PREFETCH=os.environ.get("PREFETCH", "1") == "1", FULL_N=os.environ.get("FULL_N", "1") == "1",
            SHIFT_A=os.environ.get("SHIFT_A", "1") == "1")
SHOWN = ("SHFL", "MUFU", "FFMA", "FMUL", "FADD", "LDG", "STG", "LDS", "STS", "BAR", "STL", "LDL", "RED", "REDG", "ATOMG")


MAXNREG = int(os.environ["MAXNREG"]) if os.environ.get("MAXNREG") else None  # ptxas register cap


def compile_sm90(fn, meta: dict, num_warps: int = 1, maxnreg: int | None = MAXNREG):
    """The kernel compiled as the runtime would specialise it for the strides above."""
    sig, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if fn.params[i].is_constexpr:
            sig[name], consts[name] = "constexpr", meta[name]
        elif name.endswith("_ptr"):
            sig[name] = "*bf16" if name in BF16 else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            value = STRIDES.get(name, INTS.get(name))
            if value == 1:
                sig[name], consts[name] = "constexpr", 1
            else:
                sig[name] = "i32"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource
        src = GluonASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    else:
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "maxnreg": maxnreg})


def disassemble(compiled) -> str:
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout


def resource_usage(compiled) -> str:
    """Registers, spill stores/loads (bytes) and stack frame from ``cuobjdump -res-usage``."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    return f"REG {m.group(1)} STACK {m.group(2)} SHARED {m.group(3)} LOCAL {m.group(4)}" if m else out.strip()


def instructions(sass: str) -> tuple[list, list]:
    """(whole kernel, largest loop body) as (opcode with its modifiers, operands) pairs."""
    labels, ins = {}, []
    for line in sass.splitlines():
        m = re.match(r"^(\.L_x_\d+):", line.strip())
        if m:
            labels[m.group(1)] = len(ins)
            continue
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*)", line)
        if m:
            ins.append((m.group(1), m.group(2)))
    loop = None
    for i, (op, rest) in enumerate(ins):
        target = re.search(r"(\.L_x_\d+)", rest) if op.split(".")[0] == "BRA" else None
        if target and labels.get(target.group(1), len(ins)) <= i:
            span = (labels[target.group(1)], i)
            if loop is None or span[1] - span[0] > loop[1] - loop[0]:
                loop = span
    return ins, (ins[loop[0]:loop[1] + 1] if loop else [])


def opcode_counts(sass: str) -> tuple[collections.Counter, collections.Counter]:
    """(whole kernel, largest loop body) opcode counts."""
    whole, body = instructions(sass)
    return tuple(collections.Counter(op.split(".")[0] for op, _ in part) for part in (whole, body))


def smem_cycles(body: list) -> int:
    """Cycles of the SM's shared-memory pipe (128 bytes each) that ``body``'s shared-memory instructions
    take for one warp, if none has bank conflicts: a 32-lane LDS/STS moves 4, 8 or 16 bytes per lane
    (1, 2 or 4 cycles); an LDS whose address is uniform (no per-lane register) is a broadcast (1 cycle);
    LDSM/STSM move one 8x8 16-bit matrix per cycle (``.2``, ``.4``: two, four). Shuffles are not counted."""
    cycles = 0
    for op, rest in body:
        base, *mods = op.split(".")
        if base in ("LDS", "STS"):
            width = 16 if "128" in mods else 8 if "64" in mods else 4
            address = re.search(r"\[([^\]]*)\]", rest)
            uniform = address is not None and not re.search(r"(?<!U)R\d", address.group(1))
            cycles += 1 if base == "LDS" and uniform else width * 32 // 128
        elif base in ("LDSM", "STSM"):
            cycles += 4 if "4" in mods else 2 if "2" in mods else 1
    return cycles


def main(argv=None) -> None:
    which = (argv if argv is not None else sys.argv[1:]) or ["fwd", "bwd"]
    print(f"triton {triton.__version__}, sm_90, B=8 L={L} D={D} N={N} bf16 bidirectional, maxnreg {MAXNREG}")
    for name in which:
        fn = {"fwd": kernels._fwd_scan, "bwd": kernels._bwd_scan, "fwd_columns": columns._fwd_scan_columns,
              "bwd_gluon": gluon_bwd._bwd_scan_gluon if gluon_bwd.AVAILABLE else None,
              "chunk_states": chunk_state._fwd_chunk_state, "bwd_chunk_states": chunk_state._bwd_chunk_state,
              "both_chunk_states": columns._both_chunk_states,
              "fwd_gluon": gluon_bwd._fwd_scan_gluon if gluon_bwd.AVAILABLE else None,
              "fwd_serial": columns._fwd_serial_columns,
              "fwd_serial_gluon": gluon_bwd._fwd_serial_gluon if gluon_bwd.AVAILABLE else None}[name]
        # the serial forward at the channels per program its fill gives at 300 s, B=8 (2,048 programs)
        serial = dict(DG=8, SAVE_H=True) if name.startswith("fwd_serial") else {}
        compiled = compile_sm90(fn, dict(META, COLUMNS=True, **serial))
        sass = disassemble(compiled)
        whole, loop = opcode_counts(sass)
        spills = compiled.asm["ptx"].count("st.local")
        converts = compiled.asm["ttgir"].count("convert_layout")
        for label, counts in (("kernel", whole), ("channel loop", loop)):
            shown = " ".join(f"{k} {counts[k]}" for k in SHOWN)
            print(f"{name:4s} {label:13s} total {sum(counts.values()):5d} | {shown}")
        print(f"{name:4s} layout conversions {converts}, local stores in PTX {spills}, channel loop's shared-memory "
              f"pipe cycles (conflict-free) {smem_cycles(instructions(sass)[1])}")
        print(f"{name:4s} {resource_usage(compiled)} | n_regs {getattr(compiled.metadata, 'n_regs', '-')}"
              f" | STL/LDL kernel {whole['STL']}/{whole['LDL']} loop {loop['STL']}/{loop['LDL']}")


if __name__ == "__main__":
    main()


def dump(name: str, outdir: str) -> None:
    """Write ttgir/llir/ptx/sass of one kernel to outdir (for reading)."""
    fn = {"fwd": kernels._fwd_scan, "bwd": kernels._bwd_scan}[name]
    compiled = compile_sm90(fn, META)
    os.makedirs(outdir, exist_ok=True)
    for k in ("ttir", "ttgir", "llir", "ptx"):
        open(os.path.join(outdir, f"{name}.{k}"), "w").write(compiled.asm[k])
    open(os.path.join(outdir, f"{name}.sass"), "w").write(disassemble(compiled))
