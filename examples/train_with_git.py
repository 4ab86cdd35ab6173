"""Your own ResNet and training loop on a long-tailed npz, with GIT switched on at an epoch.

    python examples/train_with_git.py --npz my_lt.npz --generator runs/my-generator --git-epoch 30

Both loaders sample class-balanced (weight 1/n_c, as DRS does late in training); the second one,
with its own seed, is GIT's independent stream. From --git-epoch on, the mixer replaces half of
every batch by generated images of the second batch (docs/design.md#git). Saves weights and normalisation.
"""

import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from invtransfer.git import GitMixer, load_generator


class SmallResNet(nn.Module):  # stands for your model
    def __init__(self, channels: int, classes: int, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        conv = lambda: nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))  # noqa
        self.blocks = nn.ModuleList(nn.Sequential(conv(), nn.ReLU(), conv()) for _ in range(3))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.head(x.mean((2, 3)))


def balanced_loader(x, y, counts, batch_size, seed):
    weights = 1.0 / torch.tensor(counts, dtype=torch.double)[y]
    sampler = WeightedRandomSampler(weights, len(y), generator=torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, sampler=sampler)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--epochs", 40), ("--git-epoch", 30), ("--batch-size", 128), ("--width", 32), ("--seed", 0)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--npz", required=True)
    p.add_argument("--generator", required=True, help="generator run directory or generator.pt")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--out", default="model.pt")
    a = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(a.seed)

    d = np.load(a.npz)
    x = torch.from_numpy(d["x_train"]).permute(0, 3, 1, 2).contiguous()  # uint8 (N, C, H, W)
    y = torch.from_numpy(d["y_train"]).long()
    counts = torch.bincount(y).tolist()
    mean, std = (x.float() / 255).mean((0, 2, 3)), (x.float() / 255).std((0, 2, 3))
    m, s = mean.view(1, -1, 1, 1).to(dev), std.view(1, -1, 1, 1).to(dev)
    model = SmallResNet(x.shape[1], len(counts), a.width).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=2e-4)

    mixer = GitMixer(load_generator(a.generator, dev), counts, gen_frac=0.5, seed=a.seed,
                     mean=mean.tolist(), std=std.tolist())  # the normalisation of the batches it gets
    main_loader = balanced_loader(x, y, counts, a.batch_size, a.seed)
    second_loader = balanced_loader(x, y, counts, a.batch_size, a.seed + 1)
    for epoch in range(a.epochs):
        generated, total = 0, 0.0
        for step, ((xb, yb), (x2, y2)) in enumerate(zip(main_loader, second_loader)):
            xb, yb = (xb.to(dev).float() / 255 - m) / s, yb.to(dev)
            if epoch >= a.git_epoch:
                xb, yb, replaced = mixer(xb, yb, (x2.to(dev).float() / 255 - m) / s, y2, epoch=epoch, step=step)
                generated += len(replaced)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{a.epochs} loss {total / (step + 1):.4f} generated {generated}", flush=True)
    torch.save({"model": model.state_dict(), "width": a.width, "class_counts": counts, "mean": mean.tolist(),
                "std": std.tolist()}, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
