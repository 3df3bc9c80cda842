"""Test NLL of an MLP VAE on dynamically binarized MNIST against minutes of training.

Trains with latentspace's own command (`latentspace train --config mnist-vae-nll`)
in a subprocess, copies the run's weights at fixed marks of training time (the model of the last
epoch finished before each mark), then evaluates every snapshot with `latentspace evaluate
--nll-samples 1000` over the full MNIST test set (binarized once with a fixed seed) and prints
the curve. Evaluation happens after training, so it does not slow training down.

"Minutes" are the CPU minutes of the one-thread training process (user + system time from
/proc): on a machine shared with other jobs, wall-clock minutes measure the neighbours, while
CPU time is what the same training costs on an idle core. Both are recorded.

    python bench/nll_mnist.py                  # train, then evaluate (about 30 + 10 minutes)
    python bench/nll_mnist.py --phase train    # only train and snapshot
    python bench/nll_mnist.py --phase evaluate # only evaluate the snapshots already taken
    python bench/nll_mnist.py --phase speed    # time `evaluate` K=1000 on the full test set
                                               # (--thread-counts 1,2 --precisions fp32,bf16)

The speed phase times the evaluation on a model of the plain recipe's shape (784-200-200-50; the
weights do not change the time) and on the benchmark's own architecture, at 1 and 2 threads, and
prints the speed-up of the vectorised IWAE loop over a per-sample loop measured in the same
process on a subset.

Anchors: pythae's VAE 89.78 nats (static binarization, K=200); the IWAE paper's VAE 86.76
(K=5000); the 784-200-200-50 tanh recipe measured on this machine 87.06 after 30 minutes.
The load average at each snapshot is printed: on a shared machine it explains slow epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# as latentspace does on import; set here because the speed phase imports torch first, and
# OpenMP's spin-waiting threads crawl on a machine with other jobs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
LATENTSPACE = [sys.executable, "-m", "latentspace.cli"]


def _epochs_done(run: Path) -> tuple[int, float]:
    """(epochs completed, seconds spent in training steps) from the run's metrics.jsonl."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0, 0.0
    records = [json.loads(line) for line in lines if line.strip()]
    epochs = [r for r in records if r.get("kind", "epoch") == "epoch"]
    return len(epochs), sum(float(r["seconds"]) for r in epochs)


def _cpu_minutes(pid: int) -> float:
    """User + system CPU time of process `pid` in minutes (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") / 60


def _snapshot(run: Path, out: Path, minutes: float, cpu: float) -> dict[str, object]:
    """Copy the run's config, weights and metrics (each replaced atomically by the trainer)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "metrics.jsonl"):
        shutil.copyfile(run / name, out / name)
    epochs, seconds = _epochs_done(out)
    info = {
        "snapshot": str(out),
        "cpu_minutes": round(cpu, 2),
        "wall_minutes": round(minutes, 2),
        "epochs": epochs,
        "train_step_minutes": round(seconds / 60, 2),
        "load_average": os.getloadavg()[0],
    }
    (out / "snapshot.json").write_text(json.dumps(info) + "\n")
    print(json.dumps(info), flush=True)
    return info


def train_phase(args: argparse.Namespace) -> None:
    run = args.work / "run"
    if run.exists():
        sys.exit(f"{run} exists: remove {args.work} or run --phase evaluate")
    marks = [float(m) for m in args.marks.split(",")]
    command = [*LATENTSPACE, "train", "--config", str(args.config), "--out", str(run)]
    for override in args.overrides:
        command += ["--set", override]
    command += ["--quiet", "--no-report", "--no-diagnostics"]  # measure training alone
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT)
    pending = list(marks)
    cpu = 0.0
    while process.poll() is None:
        time.sleep(2)
        try:
            cpu = _cpu_minutes(process.pid)
        except (OSError, IndexError):  # the process just ended
            continue
        if pending and cpu >= pending[0]:
            wall = (time.monotonic() - start) / 60
            _snapshot(run, args.work / f"at-{pending.pop(0):g}min", wall, cpu)
    if process.returncode != 0:
        sys.exit(f"training failed with exit code {process.returncode}")
    _snapshot(run, args.work / "final", (time.monotonic() - start) / 60, cpu)


def evaluate_phase(args: argparse.Namespace) -> None:
    snapshots = sorted(
        (json.loads(p.read_text()) for p in args.work.glob("*/snapshot.json")),
        key=lambda s: float(s["cpu_minutes"]),
    )
    if not snapshots:
        sys.exit(f"no snapshots in {args.work}: run --phase train first")
    rows = []
    for snap in snapshots:
        command = [*LATENTSPACE, "evaluate", str(snap["snapshot"]), "--split", "test"]
        command += ["--nll-samples", str(args.samples), "--threads", str(args.threads), "--json"]
        final = Path(str(snap["snapshot"])).name == "final"
        if args.curve_limit and not final:
            command += ["--limit", str(args.curve_limit)]
        start = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - start
        if result.returncode != 0:
            sys.exit(f"evaluate failed: {result.stderr.strip()}")
        metrics = json.loads(result.stdout)
        rows.append((snap, metrics, seconds))
        print(
            f"{snap['cpu_minutes']:5.1f} CPU min ({snap['wall_minutes']:5.1f} wall, epoch "
            f"{snap['epochs']:3d}, load {snap['load_average']:.1f}), {metrics['images']} images: NLL {metrics['nll']:.2f} nats "
            f"({metrics['nll_bits_per_dim']:.4f} bits/dim), -ELBO {metrics['negative_elbo']:.2f}, "
            f"active units {metrics['active_units']}; evaluate took {seconds:.0f} s",
            flush=True,
        )
    summary = [
        {
            **snap,
            "images": m["images"],
            "nll": m["nll"],
            "negative_elbo": m["negative_elbo"],
            "active_units": m["active_units"],
            "evaluate_s": round(s, 1),
        }
        for snap, m, s in rows
    ]
    (args.work / "curve.json").write_text(json.dumps(summary, indent=2) + "\n")
    last = summary[-1]
    print(
        f"last snapshot: {last['nll']:.2f} nats on {last['images']} test images after "
        f"{last['cpu_minutes']} CPU minutes of training (target: <= 86 within 30)"
    )


def _untrained_run(work: Path, hidden: str) -> Path:
    """A run of the given shape trained one epoch on 1000 images: timing needs only the shape."""
    from latentspace import apply_overrides, load_config, train

    out = work / f"speed-{hidden.replace(',', 'x')}"
    if not (out / "model.safetensors").exists():
        config = apply_overrides(
            load_config("mnist-vae-nll"),
            [f"model.hidden_sizes={hidden}", "data.limit=1000", "train.epochs=1"],
        )
        train(config, out, quiet=True)
    return out


def _naive_nll(run_dir: Path, images: int, samples: int) -> float:
    """Seconds per image of the obvious loop: one posterior draw per decoder call, BCE loss."""
    import torch
    import torch.nn.functional as F

    from latentspace import open_run
    from latentspace.data import resolve, to_float
    from latentspace.data.batches import binarize_static

    model = open_run(run_dir).model
    x = to_float(binarize_static(resolve("mnist:test").images[:images], 0))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, images, 100):
            batch = x[i : i + 100]
            mu, logvar = model.posterior(batch)  # type: ignore[operator]
            weights = []
            for _ in range(samples):
                eps = torch.randn_like(mu)
                z = mu + eps * (0.5 * logvar).exp()
                nll = F.binary_cross_entropy_with_logits(model.decoder(z), batch, reduction="none")
                prior = -0.5 * (z.pow(2) - eps.pow(2) - logvar).sum(1)
                weights.append(-nll.flatten(1).sum(1) + prior)
            torch.logsumexp(torch.stack(weights), 0)
    return (time.perf_counter() - start) / images


def speed_phase(args: argparse.Namespace) -> None:
    import torch

    from latentspace import open_run
    from latentspace.analysis.evaluate import evaluate

    torch.set_num_threads(1)
    for hidden in args.shapes.split(";"):
        run_dir = _untrained_run(args.work, hidden)
        naive = _naive_nll(run_dir, 200, args.samples)
        settings = [
            (int(t), precision)
            for precision in args.precisions.split(",")
            for t in args.thread_counts.split(",")
        ]
        for threads, precision in settings:
            torch.set_num_threads(threads)
            run = open_run(run_dir)
            wall, cpu = time.perf_counter(), time.process_time()
            record = evaluate(
                run, "test", nll_samples=args.samples, limit=args.limit, precision=precision
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"784-{hidden.replace(',', '-')}-50, {threads} thread(s), {precision}: evaluate K="
                f"{args.samples} on {record['images']} test images took {wall:.1f} s wall, "
                f"{cpu:.1f} s CPU (load {os.getloadavg()[0]:.1f}); per-sample loop baseline "
                f"{naive * record['images']:.1f} s wall at 1 thread -> speed-up "
                f"{naive * record['images'] / wall:.1f}x",
                flush=True,
            )
        torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["all", "train", "evaluate", "speed"], default="all")
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "src" / "latentspace" / "configs" / "mnist-vae-nll.toml",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-nll-mnist")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="train: override a setting of the config (repeatable)",
    )
    parser.add_argument("--marks", default="5,10,15,20,25,30", help="snapshot CPU minutes")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples K")
    parser.add_argument("--threads", type=int, default=0, help="evaluate threads (0: default)")
    parser.add_argument("--limit", type=int, help="speed: evaluate only the first N test images")
    parser.add_argument(
        "--shapes", default="200,200;500,500", help="speed: hidden sizes to time, ';' between"
    )
    parser.add_argument(
        "--thread-counts", default="1,2", help="speed: threads to time, ',' between"
    )
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="speed: evaluate precisions to time"
    )
    parser.add_argument(
        "--curve-limit",
        type=int,
        default=0,
        help="evaluate snapshots before the final one on the first N test images (0: all)",
    )
    args = parser.parse_args()
    if args.phase in ("all", "train"):
        train_phase(args)
    if args.phase in ("all", "evaluate"):
        evaluate_phase(args)
    if args.phase == "speed":
        speed_phase(args)


if __name__ == "__main__":
    main()
