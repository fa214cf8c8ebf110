"""Offline sm_90 compile of one scan kernel (kernels/selective_scan/chunk.py): registers, and per
innermost loop its SASS instruction count, MUFU ops, bar.syncs, global loads and shuffles. No GPU
needed: Triton compiles for an explicit target and ships ptxas / cuobjdump. Pointers, D, N, L and
the strides get the launcher's divisibility-by-16 hints (without them the layouts differ).

    TRITON_DEFAULT_FP_FUSION=1 PYTHONPATH=. python benchmarks/sass_scan.py _fwd_chunk_scan_kernel \
        '{"BD":32,"NP":16,"HAS_BIAS":true,"SOFTPLUS":true,"HAS_D":true,"HAS_Z":true,"STORE_FINAL":true,"I32":true}' 1

Arguments: kernel name, its constexprs as JSON (missing ones: their default, else False), num_warps.
$SASS_MODULE: import the kernel from another module (a variant under study); $SASS_HIST=1: also
print each inner loop's instruction histogram.
u/delta/B/C/z/y and the gradient streams are typed bf16, everything else fp32.
Example output: ['REG:93'] ['LOCAL:0'] total 608 | loop 215: MUFU 19 BAR 3 LDG 5 SHFL 8
"""
import tempfile
import sys, json, re, subprocess, os
from collections import Counter
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import importlib
ch = importlib.import_module(os.environ.get("SASS_MODULE", "mamba_genome.kernels.selective_scan.chunk"))
k = getattr(ch, sys.argv[1])
const = json.loads(sys.argv[2]); nw = int(sys.argv[3]) if len(sys.argv) > 3 else 1
BF = ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr", "dy_ptr", "du_ptr", "ddelta_ptr", "dz_ptr")
sig, cst = {}, {}
for p in k.params:
    n = p.name
    if p.is_constexpr:
        sig[n] = "constexpr"
        dflt = getattr(p, "default", False); cst[n] = False if isinstance(dflt, type) or dflt is None else dflt
        if n in const: cst[n] = const[n]
    elif n.endswith("_ptr"):
        sig[n] = "*bf16" if n in BF else "*fp32"
    else:
        sig[n] = "i32"
names = [p.name for p in k.params]
hint = ("D", "N", "L", "S", "K") + tuple(n for n in names if n.startswith("s_"))
attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if (n.endswith("_ptr") or n in hint) and sig[n] != "constexpr"}
cc = triton.compile(ASTSource(k, sig, cst, attrs), target=GPUTarget("cuda", 90, 32), options=dict(num_warps=nw))
cubin = os.path.join(tempfile.mkdtemp(), "k.cubin")
open(cubin, "wb").write(cc.asm["cubin"])
B = os.path.dirname(triton.__file__) + "/backends/nvidia/bin"
sass = subprocess.run([B + "/cuobjdump", "-sass", cubin], capture_output=True, text=True).stdout
ru = subprocess.run([B + "/cuobjdump", "-res-usage", cubin], capture_output=True, text=True).stdout
lines = [l for l in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", l)]
ins = [l.split(";")[0].split("*/")[1].strip() for l in lines]
addr = [int(l.split("*/")[0].split("/*")[1], 16) for l in lines]
loops = []
for i, s_ in enumerate(ins):
    mm = re.search(r"BRA 0x([0-9a-f]+)", s_)
    if mm and int(mm.group(1), 16) < addr[i] and int(mm.group(1), 16) in addr:
        j = addr.index(int(mm.group(1), 16))
        if sum("MUFU" in b for b in ins[j:i + 1]) >= 4:
            loops.append((j, i))
out = [f"{re.findall(r'REG:[0-9]+', ru)} {re.findall(r'LOCAL:[0-9]+', ru)} total {len(ins)}"]
# innermost loops: those containing no other loop
inner = [l for l in loops if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops)]
for j, i in inner:
    c = Counter((b.split()[1] if b.startswith("@") else b.split()[0]).split(".")[0] for b in ins[j:i + 1])
    out.append(f"loop {i - j + 1}: MUFU {c['MUFU']} BAR {c['BAR']} LDG {c['LDG']} SHFL {c['SHFL']}")
print(" | ".join(out))
if os.environ.get("SASS_HIST"):
    for j, i in inner:
        print(sorted(Counter((b.split()[1] if b.startswith("@") else b.split()[0]) for b in ins[j:i + 1]).items(), key=lambda x: -x[1]))
