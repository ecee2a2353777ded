"""PyTorch's side of bench/train-vs-pytorch: the same MLP, data, sharding
and optimizer as mlpipe-train, trained with DDP (gloo) when WORLD_SIZE > 1.

Prints, from rank 0, one line per epoch: "epoch E samples/s N" (global
samples per second) and, with --first-step, the seconds from process start
to the end of the first optimizer step."""
import argparse, gzip, os, struct, time

T0 = time.time()
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


def idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = struct.unpack(">" + "I" * (magic & 0xFF), data[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--layers", default="784,256,10")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--first-step", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo", init_method="env://")
    x = torch.from_numpy(idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
                         .reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    sizes = [int(s) for s in a.layers.split(",")]
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    torch.manual_seed(42)
    model = nn.Sequential(*mods)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    loss_fn = nn.CrossEntropyLoss()
    local = a.batch // world
    n = x.shape[0]
    for epoch in range(a.epochs):
        g = torch.Generator().manual_seed(42 + epoch)
        perm = torch.randperm(n, generator=g)[rank::world]
        t = time.time()
        steps = 0
        for s in range(0, perm.numel() - local + 1, local):
            idx_ = perm[s:s + local]
            opt.zero_grad()
            loss = loss_fn(model(x[idx_]), y[idx_])
            loss.backward()
            opt.step()
            steps += 1
            if a.first_step:
                if rank == 0:
                    print(f"first step after {time.time() - T0:.3f} s", flush=True)
                return
        if rank == 0:
            print(f"epoch {epoch + 1} samples/s {steps * a.batch / (time.time() - t):.0f}", flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
