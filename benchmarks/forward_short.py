"""Inference forward throughput of the 7m and 1.4m presets at short windows (bf16 autocast, no grad).

Times MambaLM.backbone without state, with state carried (as score --vcf runs it), and with the
LM head + log-softmax, at batch 64/256/1024 x length 512/1024; CUDA-event medians of 10 runs after
3 warm-ups. GPU only. Usage: PYTHONPATH=. python benchmarks/forward_short.py
"""
import torch, time, statistics
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
dev = "cuda"
def timeit(fn, reps=10):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) / 1e3)
    return statistics.median(ts)
for preset in ("7m", "1.4m"):
    m = MambaLM(MambaConfig.from_preset(preset)).to(dev).eval()
    for L in (512, 1024):
        for B in (64, 256, 1024):
            ids = torch.randint(5, 9, (B, L), device=dev)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                t = timeit(lambda: m.backbone(ids))
                st = m.allocate_state(B)
                def with_state():
                    s2 = m.allocate_state(B)
                    m.backbone(ids, state=s2)
                t2 = timeit(with_state)
                t3 = timeit(lambda: m(ids).float().log_softmax(-1))
            print(f"{preset} B={B} L={L}: backbone {B*L/t/1e6:.2f} Mtok/s | with state {B*L/t2/1e6:.2f} | +head+logsoftmax {B*L/t3/1e6:.2f}", flush=True)
    del m; torch.cuda.empty_cache()
