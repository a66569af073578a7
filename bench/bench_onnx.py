#!/usr/bin/env python3
"""mama.h's image encoding against ONNX Runtime (issue 18), one command:

    python3 bench/bench_onnx.py [--configs small,base] [--threads 1,2] [--rounds 3]

For each config: `build/mama bench encode --config C --save W` writes a model
with the preset's image tower (random initialisation, SPEC A.5) as
safetensors; the independent PyTorch reference (tests/ref/mama_ref.py) loads
the SAME file and its image tower (pixels -> L2-normalised global
embedding) is exported with torch.onnx.export (opset 17, cached under
build/onnx/).  Then, per thread count, the two run alternately ROUNDS times,
each in a fresh process on the same images (raw float32, written once):
`build/mama bench encode --weights W --images F` and this script's
`--ort-run` mode (onnxruntime, all graph optimisations, intra-op threads =
the thread count, inter-op 1).  Each run reports its fastest pass; the best
of each side over the rounds is compared (on a shared machine the best of
alternating runs is the closest either side gets to a quiet one).  Printed:
images/s of both, the ratio mama.h / ONNX Runtime (and the same per CPU
second of the process: steadier on a shared machine, a check rather than
the result), the max relative
difference of the embeddings (max|a-b| / max|b|), and the peak resident
memory of both processes (ONNX Runtime's also net of the Python interpreter
and the onnxruntime import).  Last line: encode_ratio_vs_onnxruntime=<worst
ratio over all configurations>.  Without torch, onnx or onnxruntime it
prints a SKIP line and exits 0.

Environment: MAMA=build/mama (the binary), ONNX_DIR=build/onnx.
"""
import argparse
import json
import os
import re
import resource
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_mb():
    """This process image's peak resident memory (VmHWM: unlike ru_maxrss it
    does not inherit the peak of the process that forked it)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ort_run(args):
    """One ONNX Runtime process: --steps passes over the images, best pass."""
    import numpy as np
    rss0 = peak_rss_mb()
    import onnxruntime as ort
    rss_import = peak_rss_mb()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.ort_run, so, providers=["CPUExecutionProvider"])
    shape = [args.batch, args.chans, args.size, args.size]
    x = np.fromfile(args.images, dtype=np.float32).reshape(shape)
    best, best_cpu = 1e30, 1e30
    emb = None
    for _ in range(max(1, args.steps)):
        t0, c0 = time.perf_counter(), time.process_time()
        emb = sess.run(None, {"images": x})[0]
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, max(time.process_time() - c0, 1e-9))
    if args.emb_out:
        emb.astype(np.float32).tofile(args.emb_out)
    print("ort: python %.0f MB, after import %.0f MB, peak %.0f MB" % (rss0, rss_import, peak_rss_mb()))
    print("ort_peak_rss_mb=%.1f" % peak_rss_mb())
    print("ort_net_rss_mb=%.1f" % (peak_rss_mb() - rss_import))
    print("ort_images_per_cpu_s=%.4f" % (args.batch / best_cpu))
    print("ort_images_per_s=%.4f" % (args.batch / best))


def read_safetensors(path):
    """A tiny safetensors reader (no extra dependency): {name: tensor}, metadata."""
    import numpy as np
    import torch
    dt = {"F32": np.float32, "I64": np.int64, "BF16": None}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    meta = head.pop("__metadata__", {})
    out = {}
    for k, v in head.items():
        a, b = v["data_offsets"]
        if dt.get(v["dtype"]) is None:
            raise SystemExit("bench_onnx: %s: dtype %s not handled" % (k, v["dtype"]))
        arr = np.frombuffer(data[a:b], dtype=dt[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out, meta


def export(weights, onnx_path):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
    import mama_ref
    sd, meta = read_safetensors(weights)
    cj = json.loads(meta["mama_config"])
    cfg = mama_ref.make_config(**{k: cj[k] for k in mama_ref.CONFIG_FIELDS if k in cj})
    model = mama_ref.MaMARef(cfg)
    mama_ref.load_state(model, sd)
    model.eval()

    class ImageTower(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, images):
            return self.m.encode_image(images)["emb"]

    S = cfg["image_size"]
    x = torch.zeros(1, 3, S, S)
    kw = dict(input_names=["images"], output_names=["emb"], opset_version=17,
              dynamic_axes={"images": {0: "batch"}, "emb": {0: "batch"}})
    with torch.no_grad():
        try:
            torch.onnx.export(ImageTower(model), (x,), onnx_path, dynamo=False, **kw)
        except TypeError:  # older torch: no `dynamo` argument
            torch.onnx.export(ImageTower(model), (x,), onnx_path, **kw)
    return cfg


def image_tower_gflop(cfg):
    """Multiply-adds x 2 of one image through the tower: the patch embedding,
    per block the four GEMMs (qkv 3D, proj D, fc1 4D, fc2 4D: 12 D^2 per
    token) and attention (QK^T and AV: 2 T^2 D); LayerNorm, GELU, softmax
    and the head are left out (a few percent at most)."""
    S, P, D, L = cfg["image_size"], cfg["patch_size"], cfg["vision_dim"], cfg["vision_depth"]
    N = (S // P) ** 2
    T = N + 1 + cfg.get("registers", 0)
    patch = 2.0 * N * (cfg.get("in_chans", 3) * P * P) * D
    block = 2.0 * T * D * 12 * D + 2.0 * 2 * T * T * D
    return (patch + L * block) * 1e-9


def core_peak_gflops():
    """This core's float32 FMA peak, measured by bench/peak_fma.c (built here
    with -march=native); None when no C compiler works."""
    exe = os.path.join(ROOT, "build", "peak_fma")
    src = os.path.join(ROOT, "bench", "peak_fma.c")
    try:
        if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
            subprocess.run([os.environ.get("CC", "cc"), "-O2", "-march=native", src, "-o", exe], check=True)
        return last_value(subprocess.run([exe], capture_output=True, text=True, check=True).stdout, "peak_gflops")
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def last_value(out, key):
    v = None
    for line in out.splitlines():
        if line.startswith(key + "="):
            v = float(line.split("=", 1)[1])
    if v is None:
        raise SystemExit("bench_onnx: no %s= in the output:\n%s" % (key, out))
    return v


def run(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("bench_onnx: %s failed:\n%s%s" % (" ".join(cmd), p.stdout, p.stderr))
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="small,base")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "3")))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="passes per run (default: 5 small, 2 base)")
    ap.add_argument("--mama-args", default="", help="extra arguments of `bench encode` (e.g. an inference option)")
    # the ONNX Runtime worker (one process per run)
    ap.add_argument("--ort-run", help=argparse.SUPPRESS)
    ap.add_argument("--export", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    ap.add_argument("--emb-out", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--chans", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--threads-one", type=int, dest="threads_one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_run:
        args.threads = args.threads_one
        return ort_run(args)
    if args.export:
        print(json.dumps(export(*args.export)))
        return 0

    try:
        import importlib.util
        import numpy as np
        import onnxruntime
        for mod in ("torch", "onnx"):  # torch.onnx.export needs onnx; both only in the export process
            if importlib.util.find_spec(mod) is None:
                raise ImportError("no module named " + mod)
    except ImportError as e:
        print("SKIP: ONNX Runtime comparison needs torch, onnx and onnxruntime (pip install torch onnx onnxruntime): %s" % e)
        return 0
    mama = os.environ.get("MAMA", os.path.join(ROOT, "build", "mama"))
    odir = os.environ.get("ONNX_DIR", os.path.join(ROOT, "build", "onnx"))
    os.makedirs(odir, exist_ok=True)
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print("== image encoding, mama.h vs ONNX Runtime %s, CPU %s, %d cores visible, batch %d"
          % (onnxruntime.__version__, cpu, os.cpu_count(), args.batch))
    ratios = []
    peak = core_peak_gflops()
    if peak:
        print("one core's float32 FMA peak (bench/peak_fma.c, best of 5): %.1f GFLOP/s" % peak)
    for cfg_name in args.configs.split(","):
        W = os.path.join(odir, cfg_name + ".safetensors")
        O = os.path.join(odir, cfg_name + ".onnx")
        I = os.path.join(odir, "%s_images_b%d.f32" % (cfg_name, args.batch))
        run([mama, "bench", "encode", "--config", cfg_name, "--batch", "1", "--steps", "1", "--save", W], 1)
        t0 = time.time()
        cfg = json.loads(run([sys.executable, os.path.abspath(__file__), "--export", W, O], 1).splitlines()[-1])
        print("%s: exported %s (%.1f s)" % (cfg_name, O, time.time() - t0))
        gflop = image_tower_gflop(cfg)
        print("%s: %.1f GFLOP per image (GEMMs and attention)" % (cfg_name, gflop))
        S = cfg["image_size"]
        rng = np.random.default_rng(1234)
        rng.uniform(-1, 1, size=(args.batch, 3, S, S)).astype(np.float32).tofile(I)
        steps = args.steps or (2 if S > 300 else 5)
        for T in [int(t) for t in args.threads.split(",")]:
            cb, ob, cc, oc, cmem, omem, onet, err = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None
            for r in range(args.rounds):
                ce = os.path.join(odir, "emb_mama.f32")
                oe = os.path.join(odir, "emb_ort.f32")
                out = run([mama, "bench", "encode", "--weights", W, "--images", I, "--batch", str(args.batch),
                           "--steps", str(steps), "--emb-out", ce] + args.mama_args.split(), T)
                c = last_value(out, "encode_images_per_s")
                cc = max(cc, last_value(out, "encode_images_per_cpu_s"))
                cmem = max([cmem] + [float(x) for x in re.findall(r"peak host memory (\d+) MB", out)])
                out = run([sys.executable, os.path.abspath(__file__), "--ort-run", O, "--images", I, "--batch",
                           str(args.batch), "--size", str(S), "--steps", str(steps), "--threads-one", str(T),
                           "--emb-out", oe], T)
                o = last_value(out, "ort_images_per_s")
                oc = max(oc, last_value(out, "ort_images_per_cpu_s"))
                omem = max(omem, last_value(out, "ort_peak_rss_mb"))
                onet = max(onet, last_value(out, "ort_net_rss_mb"))
                a = np.fromfile(ce, dtype=np.float32)
                b = np.fromfile(oe, dtype=np.float32)
                err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                print("  %s %d thread(s) round %d: mama.h %.3f images/s, ONNX Runtime %.3f images/s" % (cfg_name, T, r, c, o))
                cb, ob = max(cb, c), max(ob, o)
            ratio = cb / ob
            ratios.append(ratio)
            print("%s, %d thread(s): mama.h %.3f images/s, ONNX Runtime %.3f images/s (best of %d alternating runs), "
                  "ratio %.3f (per CPU second: %.3f vs %.3f, ratio %.3f); embeddings max rel diff %.2e; peak memory "
                  "mama.h %.0f MB, ONNX Runtime %.0f MB (%.0f MB above the interpreter + import)"
                  % (cfg_name, T, cb, ob, args.rounds, ratio, cc, oc, cc / oc, err, cmem, omem, onet))
            if peak:
                # per CPU second = per core fully used: the fraction of one core's peak
                print("%s, %d thread(s): per CPU second mama.h %.1f GFLOP/s (%.0f%% of one core's peak), "
                      "ONNX Runtime %.1f GFLOP/s (%.0f%%)" % (cfg_name, T, cc * gflop, 100 * cc * gflop / peak,
                                                               oc * gflop, 100 * oc * gflop / peak))
    print("encode_ratio_vs_onnxruntime=%.3f" % min(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
