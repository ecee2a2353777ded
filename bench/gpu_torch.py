#!/usr/bin/env python3
"""bench/gpu_torch.py - the PyTorch side of bench/gpu.

  gpu_torch.py make-data DIR
      writes a synthetic MNIST-shaped IDX dataset (60000 28x28 images,
      10 classes) into DIR, for machines without
      /usr/share/datasets/fashion-mnist (numpy or torch, else plain Python);
  gpu_torch.py bench --data DIR --config 784,256,10:64 [...] [--epochs 3] [--reps 3]
      trains the same MLP as mlpipe-train (nn.Linear layers with ReLU
      between, CrossEntropyLoss, SGD lr 0.05 momentum 0.9) under
      DistributedDataParallel with NCCL at world size 1, and prints one line
      per configuration: "RESULT torch LAYERS BATCH SAMPLES_PER_SEC", the
      median over --reps runs of the mean samples/s of epochs 2..N.

Like with like: FP32 with TF32 off, and every step's batch gathered from
host memory and copied to the GPU, as mlpipe-train does; the loss and
accuracy are accumulated on the GPU (no per-step synchronisation, which
would only slow PyTorch down).
"""
import gzip
import os
import random
import statistics
import struct
import sys
import time


def write_idx(path, magic, dims, data):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(data)


def make_data(out_dir, n=60000, classes=10, side=28):
    os.makedirs(out_dir, exist_ok=True)
    pixels = side * side
    rng = random.Random(1234)
    labels = bytes(rng.randrange(classes) for _ in range(n))
    try:
        import numpy as np

        g = np.random.default_rng(1234)
        protos = g.integers(0, 256, size=(classes, pixels), dtype=np.int16)
        lab = np.frombuffer(labels, dtype=np.uint8)
        noise = g.integers(-96, 97, size=(n, pixels), dtype=np.int16)
        images = np.clip(protos[lab] + noise, 0, 255).astype(np.uint8).tobytes()
    except ImportError:
        # class prototype with its low 6 bits replaced by noise
        protos = [int.from_bytes(rng.randbytes(pixels), "big") for _ in range(classes)]
        keep = int.from_bytes(bytes([0xC0]) * pixels, "big")
        parts = []
        for c in labels:
            noise = int.from_bytes(rng.randbytes(pixels), "big") & ~keep
            parts.append(((protos[c] & keep) | noise).to_bytes(pixels, "big"))
        images = b"".join(parts)
    write_idx(os.path.join(out_dir, "train-images-idx3-ubyte"), 0x803, (n, side, side), images)
    write_idx(os.path.join(out_dir, "train-labels-idx1-ubyte"), 0x801, (n,), labels)


def read_idx(path):
    opener = open
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            opener = gzip.open
    with opener(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return dims, f.read()


def find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    sys.exit(f"gpu_torch.py: no {stem}[.gz] in {data_dir}")


def bench(args):
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    data_dir, configs, epochs, reps = args["data"], args["configs"], args["epochs"], args["reps"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(20000 + os.getpid() % 20000))
    dist.init_process_group("nccl", rank=0, world_size=1)

    dims, raw = read_idx(find(data_dir, "train-images-idx3-ubyte"))
    _, raw_labels = read_idx(find(data_dir, "train-labels-idx1-ubyte"))
    n = dims[0]
    features = 1
    for d in dims[1:]:
        features *= d
    x_host = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(n, features).float() / 255
    y_host = torch.frombuffer(bytearray(raw_labels), dtype=torch.uint8).long()
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name(dev)}, "
          f"{n} samples x {features}", flush=True)

    for layers, batch in configs:
        runs = []
        for rep in range(reps):
            torch.manual_seed(rep + 1)
            mods = []
            for i in range(len(layers) - 1):
                mods.append(nn.Linear(layers[i], layers[i + 1]))
                if i < len(layers) - 2:
                    mods.append(nn.ReLU())
            model = DDP(nn.Sequential(*mods).to(dev), device_ids=[0])
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            loss_fn = nn.CrossEntropyLoss()
            rates = []
            for epoch in range(epochs):
                perm = torch.randperm(n)
                loss_sum = torch.zeros((), device=dev)
                correct = torch.zeros((), device=dev, dtype=torch.long)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for i in range(0, n, batch):
                    idx = perm[i:i + batch]
                    xb = x_host.index_select(0, idx).to(dev, non_blocking=True)
                    yb = y_host.index_select(0, idx).to(dev, non_blocking=True)
                    out = model(xb)
                    loss = loss_fn(out, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach() * xb.shape[0]
                    correct += (out.argmax(1) == yb).sum()
                torch.cuda.synchronize()
                rates.append(n / (time.perf_counter() - t0))
                acc = correct.item() / n
            runs.append(statistics.mean(rates[1:]) if len(rates) > 1 else rates[0])
            print(f"# torch {','.join(map(str, layers))} batch {batch} run {rep + 1}: "
                  f"{runs[-1]:.0f} samples/s (last epoch accuracy {acc:.4f})", flush=True)
            del model, opt
        print(f"RESULT torch {','.join(map(str, layers))} {batch} {statistics.median(runs):.0f}",
              flush=True)
    dist.destroy_process_group()


def main(argv):
    if len(argv) == 2 and argv[0] == "make-data":
        make_data(argv[1])
        return
    if not argv or argv[0] != "bench":
        sys.exit(__doc__)
    args = {"data": None, "configs": [], "epochs": 3, "reps": 3}
    it = iter(argv[1:])
    for a in it:
        v = next(it, None)
        if v is None:
            sys.exit(f"gpu_torch.py: {a} needs a value")
        if a == "--data":
            args["data"] = v
        elif a == "--config":
            layers, batch = v.split(":")
            args["configs"].append(([int(s) for s in layers.split(",")], int(batch)))
        elif a == "--epochs":
            args["epochs"] = int(v)
        elif a == "--reps":
            args["reps"] = int(v)
        else:
            sys.exit(f"gpu_torch.py: unknown option {a}")
    if not args["data"] or not args["configs"]:
        sys.exit(__doc__)
    bench(args)


if __name__ == "__main__":
    main(sys.argv[1:])
