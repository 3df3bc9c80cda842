"""`make demo`: train a VAE on MNIST into runs/demo, then write samples and reconstructions and
print the test loss. Running it again reuses a finished run and resumes an interrupted one."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from latentspace import runs
from latentspace.config import load_config
from latentspace.data import BATCH, Batches, resolve
from latentspace.errors import LatentspaceError
from latentspace.imaging import save_grid
from latentspace.train import average_terms, train

CONFIG = "demo"  # the shipped src/latentspace/configs/demo.toml
OUT = Path("runs/demo")


def _epochs_done(run_dir: Path) -> int:
    return max(
        (r["epoch"] for r in runs.read_metrics(run_dir) if r.get("kind") == "epoch"), default=0
    )


def main() -> int:
    config = load_config(CONFIG)
    if not (OUT / runs.CONFIG).exists():
        print(f"training a VAE on MNIST into {OUT} ({config.train.epochs} epochs)")
        run = train(config, OUT)
    elif _epochs_done(OUT) < config.train.epochs:
        print(f"resuming {OUT} from epoch {_epochs_done(OUT)}")
        run = train(config, OUT, resume=True)
    else:
        print(f"{OUT} is already trained (rm -r {OUT} to train it again)")
        run = runs.open_run(OUT)
    model = run.model
    test = resolve("mnist:test")
    torch.manual_seed(0)
    terms = average_terms(model, Batches(test.images, BATCH, device=model.device))
    samples = save_grid(
        model.generate(64, generator=torch.Generator().manual_seed(0)).cpu(),
        OUT / "samples.png",
        nrow=8,
        title=f"{OUT}: 64 images generated from the prior, seed 0",
    )
    originals = test.images[:32].float() / 255
    recon = model.reconstruct(originals.to(model.device)).cpu()
    rows = [t for i in range(0, 32, 8) for t in (originals[i : i + 8], recon[i : i + 8])]
    reconstructions = save_grid(
        torch.cat(rows),
        OUT / "reconstructions.png",
        nrow=8,
        title=f"{OUT}: mnist:test images 0-31, each row of originals above its reconstructions",
        rows=[label for i in range(0, 32, 8) for label in (f"test {i}-{i + 7}", "reconstructed")],
    )
    print(
        f"test loss (negative ELBO, nats per image): {terms['total']:.2f} "
        f"= reconstruction {terms['reconstruction']:.2f} + KL {terms['kl']:.2f}"
    )
    print(f"samples:         {samples}")
    print(
        f"reconstructions: {reconstructions} (rows of originals, each followed by its "
        "reconstructions)"
    )
    from latentspace.analysis.report import write_report

    print(f"report:          {write_report(OUT)}  (open it in a browser)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LatentspaceError as error:
        print(f"latentspace: error: {error}", file=sys.stderr)
        sys.exit(1)
