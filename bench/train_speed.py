"""Training speed: latentspace's trainer against the textbook PyTorch loop, same process.

The textbook loop is the pytorch/examples VAE recipe: a per-sample `Dataset` fed through a
`DataLoader`, sigmoid outputs with `F.binary_cross_entropy`, Adam. Both train the same
784-400-20 MLP VAE on full MNIST (batch 128, one thread). Runs alternate, and the best epoch of
each is compared, so a noisy neighbour hurts both sides alike. latentspace runs twice per round:
in float32 (the same arithmetic as the textbook loop) and with `train.precision = "bf16"` (mixed
precision: bfloat16 matrix products, float32 weights and losses), each ratio printed.

    .venv/bin/python bench/train_speed.py [--epochs 3] [--threads 1] [--device cpu|cuda]

On a GPU the textbook loop moves each batch to the device, as pytorch/examples does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import latentspace as ls
from latentspace.data import resolve


class TextbookVAE(nn.Module):
    """pytorch/examples vae/main.py, unchanged in substance."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


class PerSample(Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].float() / 255


def textbook_epoch(images: torch.Tensor, device: torch.device) -> float:
    model = TextbookVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(PerSample(images), batch_size=128, shuffle=True)
    start = time.perf_counter()
    for batch in loader:
        x = batch.to(device)
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = bce + kld
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def latentspace_epoch(threads: int, device: str, precision: str) -> float:
    config = ls.default_config(
        "vae",
        dataset="mnist",
        epochs=1,
        hidden_sizes=(400,),
        latent_dim=20,
        batch_size=128,
        val_fraction=0.0,
        threads=threads,
        device=device,
        precision=precision,
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = ls.train(config, Path(tmp) / "run", quiet=True, report=False)
        return float(run.metrics[-1]["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = resolve("mnist").images
    theirs: list[float] = []
    ours: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(args.epochs):
        theirs.append(textbook_epoch(images, torch.device(args.device)))
        for precision, speeds in ours.items():
            speeds.append(latentspace_epoch(args.threads, args.device, precision))
        print(
            f"round {i + 1}: textbook {theirs[-1]:8.0f} samples/s   latentspace fp32 "
            f"{ours['fp32'][-1]:8.0f}   bf16 {ours['bf16'][-1]:8.0f} samples/s"
        )
    for precision, speeds in ours.items():
        print(
            f"best: textbook {max(theirs):.0f}, latentspace {precision} {max(speeds):.0f} samples/s "
            f"-> ratio {max(speeds) / max(theirs):.2f}x "
            f"(target >= 2x, {args.threads} thread(s), {args.device})"
        )


if __name__ == "__main__":
    main()
