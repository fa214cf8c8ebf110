"""Where ``mamba-genome embed``'s start-up goes: the wall time of a 1 kbp embed with a random 7m model
(after one run that fills the Triton cache), of ``import torch`` and of ``import torch`` plus a CUDA
context, then a cProfile of the whole command (top functions by cumulative and by own time; the
profile is written to $OUT/embed.prof).

    PYTHONPATH=. python benchmarks/startup_profile.py
"""
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
out = Path(os.environ.get("OUT", "/tmp/startup")); out.mkdir(parents=True, exist_ok=True)
work = Path("/tmp/su"); work.mkdir(exist_ok=True)
from mamba_genome.checkpoint import save_model
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
save_model(MambaLM(MambaConfig.from_preset("7m")), work / "m7")
(work / "t.fa").write_text(">t\n" + "ACGT" * 250 + "\n")
env = dict(os.environ, PYTHONPATH=str(ROOT) + ":" + os.environ.get("PYTHONPATH", ""))
cmd = [sys.executable, "-m", "mamba_genome", "embed", str(work / "t.fa"), "--model", str(work / "m7"), "-o", str(work / "e.npy"), "-q"]
def wall(c):
    t = time.perf_counter(); p = subprocess.run(c, env=env, capture_output=True, text=True); w = time.perf_counter() - t
    if p.returncode: print(p.stderr[-2000:])
    return w
print("warm-up (compile):", round(wall(cmd), 2))
for i in range(3):
    print("embed 1 kbp wall:", round(wall(cmd), 2))
print("import torch:", round(wall([sys.executable, "-c", "import torch"]), 2))
print("import torch + cuda init:", round(wall([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()"]), 2))
prof = str(out / "embed.prof")
subprocess.run([sys.executable, "-m", "cProfile", "-o", prof] + cmd[1:], env=env, capture_output=True)
st = pstats.Stats(prof); st.sort_stats("cumulative").print_stats(60)
st.sort_stats("tottime").print_stats(25)
