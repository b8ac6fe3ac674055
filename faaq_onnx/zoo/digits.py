"""digits-cnn: the embedded demo, trained in seconds on scikit-learn's bundled 8x8 digits.

It needs no downloaded data at all, so ``faaq demo`` and the unit tests can use a
model with real (if tiny) accuracy.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class DigitsCNN(nn.Module):
    """Small enough to train in seconds, yet has Conv, BN, Relu, MaxPool and Gemm to quantize."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def digits_split(split_seed: int = 0):
    """The fixed stratified 2/3 : 1/3 split of scikit-learn's digits, as float32 NCHW in [0, 1].

    The split does not depend on the model seed, so every digits-cnn is scored on
    the same held-out images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=1 / 3, stratify=y, random_state=split_seed
    )
    return (np.ascontiguousarray(x_tr), y_tr), (np.ascontiguousarray(x_te), y_te)


def train_digits_cnn(seed: int = 0, epochs: int = 30, split_seed: int = 0):
    """Train digits-cnn from scratch; returns (module, (x_train, y_train), (x_test, y_test)).

    Same seed, same weights: the torch RNG is driven by a local generator and the
    training runs single-threaded inside, so the result does not depend on the
    caller's thread count.
    """
    (x_tr, y_tr), (x_te, y_te) = digits_split(split_seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsCNN()
            gen = torch.Generator().manual_seed(seed)
            xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            model.train()
            for _ in range(epochs):
                perm = torch.randperm(len(xt), generator=gen)
                for i in range(0, len(xt), 64):
                    idx = perm[i : i + 64]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(model(xt[idx]), yt[idx]).backward()
                    opt.step()
                sched.step()
    finally:
        torch.set_num_threads(prev_threads)
    model.eval()
    return model, (x_tr, y_tr), (x_te, y_te)


@functools.lru_cache(maxsize=4)
def _trained_digits_state(seed: int) -> dict:
    """Training is deterministic, so one process need not repeat it."""
    model, _, _ = train_digits_cnn(seed=seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":  # quick manual check of the demo's cost
    t0 = time.perf_counter()
    m, _, (xt, yt) = train_digits_cnn()
    with torch.no_grad():
        acc = (m(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    print(f"digits-cnn: test acc {acc:.4f}, {time.perf_counter() - t0:.1f}s")
