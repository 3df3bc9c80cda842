"""The sentence VAE against its language-model baseline on the fortunes corpus (issue 20).

Each model trains for --minutes M of wall time on --threads cores (the same decoder; the VAE adds
the encoder and the code), then both are scored on the corpus's test split: the importance-
weighted NLL bound with K = --samples (>= 100) and perplexity, and for the VAE the KL per
sentence, active units (Cov_x E_q[z] > the threshold `evaluate` uses), mutual information, and
the greedy token recovery and BLEU of decode(encode(s)). Then five interpolations between test
sentences and twenty sentences generated from the prior, unedited.

The baseline is matched: the LM is the VAE's decoder with the same --dropout, --word-dropout and
--patience (early stopping on the validation bound). Fortunes' 19252 training sentences are
small beside 30 minutes of an idle core: an unregularised LM passes its best validation NLL
after about 7 epochs (~10 minutes) and then overfits, so the budget is an upper limit and
early stopping decides when each model stops.

Targets: VAE NLL <= LM NLL, with KL >= 5 nats and >= 8 active units; token recovery >= 50%.

    latentspace data fetch fortunes
    .venv/bin/python bench/text_vae.py [--minutes 30] [--threads 2] [--samples 100]
    .venv/bin/python bench/text_vae.py --together --threads 1   # both at once, a core each
    .venv/bin/python bench/text_vae.py --quick   # a minute: proves the script runs
    .venv/bin/python bench/text_vae.py --step [--threads 1]   # one training step's cost

--step times one training step of each model on batches of the corpus's training sentences
against the first implementation (the decoder run over the padded batch, the vocabulary layer
and softmax on every padded position), side by side in one process, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import latentspace as ls
from latentspace.analysis.text_evaluate import evaluate_text
from latentspace.data import held_out, prepare_data
from latentspace.data.text import PAD_ID
from latentspace.models import build_model, for_data
from latentspace.train import StopTraining

FAMILIES = ("sentence_vae", "lm")


class TimeBudget:
    """Stops training after the epoch that would otherwise end past `seconds` (a stop is only
    allowed once an epoch is committed, so the next epoch is skipped when it would not fit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start, self.last = seconds, time.perf_counter(), 0.0

    def on_epoch_end(self, trainer: object, record: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.start
        epoch_seconds = elapsed - self.last
        self.last = elapsed
        if elapsed + epoch_seconds > self.seconds:
            raise StopTraining(f"time budget: {elapsed / 60:.1f} of {self.seconds / 60:g} minutes")


def padded_nll(model: Any, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The first implementation's -log p(x | z) (no word dropout): the decoder over the whole
    padded batch, logits for every position, the softmax over a transposed (B, V, T) tensor."""
    inputs, targets = ids[:, :-1], ids[:, 1:]
    logits, _ = model.decoder_step(inputs, z, model.initial_hidden(z))
    nll = F.cross_entropy(
        logits.float().transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none"
    )
    return nll.sum(1)


def step_times(args: argparse.Namespace, rounds: int = 3) -> None:
    """Seconds per training step, this implementation against `padded_nll`, in turns (so both
    see the same load), on the same batches, word dropout off so both do the same work."""
    results = {}
    for family in FAMILIES:
        overrides = [*settings(args, family), "data.limit=2000", "model.word_dropout=0"]
        config = ls.apply_overrides(ls.default_config(), overrides)
        train_set, _ = prepare_data(config)
        batches = list(train_set.batches(args.batch_size, shuffle=True))[: args.step_batches]
        model = build_model(for_data(config.model, train_set), train_set.image_shape, config.train)
        optimizers = model.configure_optimizers()
        model.train()
        seconds = {"now": 0.0, "padded": 0.0}
        for _ in range(rounds):
            for kind in seconds:
                if kind == "padded":
                    model.sentence_nll = lambda i, z, m=model: padded_nll(m, i, z)
                model.training_step(batches[0], optimizers)  # warm up
                started = time.perf_counter()
                for x in batches:
                    model.training_step(x, optimizers)
                seconds[kind] += (time.perf_counter() - started) / len(batches) / rounds
                model.__dict__.pop("sentence_nll", None)
        tokens = sum(x.shape[0] * x.shape[1] for x in batches) / len(batches)
        results[family] = seconds
        print(
            f"{family}: {seconds['now'] * 1000:.0f} ms/step now, {seconds['padded'] * 1000:.0f} "
            f"ms/step padded (x{seconds['padded'] / seconds['now']:.2f}); batch {args.batch_size}"
            f" sentences, {tokens:.0f} padded tokens on average, {args.threads} thread(s)",
            flush=True,
        )
    x = torch.randn(args.batch_size * 24, args.hidden, requires_grad=True)
    w = torch.randn(train_set.image_shape[2], args.hidden, requires_grad=True)
    started = time.perf_counter()
    for _ in range(5):
        (x @ w.t()).sum().backward()
    floor = (time.perf_counter() - started) / 5
    print(
        f"for scale: one ({len(x)} x {args.hidden}) @ ({args.hidden} x {len(w)}) product "
        f"forward and backward takes {floor * 1000:.0f} ms here"
    )


def settings(args: argparse.Namespace, family: str) -> list[str]:
    common = [
        "data.dataset=fortunes",
        f"model.name={family}",
        "train.epochs=1000",
        f"train.batch_size={args.batch_size}",
        f"train.threads={args.threads}",
        "train.device=cpu",
        f"train.lr={args.lr}",
        "train.grad_clip=5",
        f"model.embedding_dim={args.embedding}",
        f"model.hidden_size={args.hidden}",
        # the decoder's regularisers, the same for both families: a matched baseline
        f"model.dropout={args.dropout}",
        f"model.word_dropout={args.word_dropout}",
        f"train.patience={args.patience}",
    ]
    if args.train_limit:
        common.append(f"data.limit={args.train_limit}")
    if family == "lm":
        return common
    return [*common, f"model.latent_dim={args.latent}", *args.vae]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=100, help="K of the IWAE bound")
    parser.add_argument("--test-limit", type=int, default=0, help="score this many (0: all)")
    parser.add_argument(
        "--train-limit",
        type=int,
        default=0,
        help="train on the first N sentences (0: all); training stops at an epoch's end, so on "
        "a slow machine a short budget needs shorter epochs",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--embedding", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument(
        "--dropout", type=float, default=0.3, help="the decoder's output dropout (both models)"
    )
    parser.add_argument(
        "--word-dropout",
        type=float,
        default=0.0,
        help="share of the decoder's input tokens replaced by UNK in training (both models)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=2,
        help="stop a model after this many epochs without a better validation bound (0: off)",
    )
    parser.add_argument(
        "--vae",
        nargs="*",
        default=[],
        help="model.key=value settings for the VAE only (default: none: the family's defaults)",
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--quick", action="store_true", help="tiny: 2000 sentences, 1 minute")
    parser.add_argument(
        "--together",
        action="store_true",
        help="train both families at once, one process each (on 2 cores: --threads 1)",
    )
    parser.add_argument("--only", choices=FAMILIES, help=argparse.SUPPRESS)
    parser.add_argument("--step", action="store_true", help="time one training step only")
    parser.add_argument("--step-batches", type=int, default=4, help="batches --step times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.step:
        step_times(args)
        return 0
    if args.quick:
        args.minutes, args.samples = min(args.minutes, 0.5), 10
        args.test_limit, args.train_limit = 100, 2000
    out = args.out or Path(tempfile.mkdtemp(prefix="text-vae-"))
    if args.only:
        scores = train_and_score(args, args.only, out)
        (out / f"{args.only}.json").write_text(json.dumps(scores))
        return 0
    if args.together:
        # Both families train at once, one process each: they see the same load from whatever
        # else runs on the machine, so the comparison stays fair on a shared machine.
        flags = [a for a in sys.argv[1:] if a != "--together"]
        children = [
            subprocess.Popen(
                [sys.executable, __file__, *flags, "--only", family, "--out", str(out)]
            )
            for family in FAMILIES
        ]
        if any([child.wait() != 0 for child in children]):  # wait for both
            return 1
        results = {f: json.loads((out / f"{f}.json").read_text()) for f in FAMILIES}
    else:
        results = {family: train_and_score(args, family, out) for family in FAMILIES}
    for family in FAMILIES:
        print(f"{family}: {json.dumps(results[family])}", flush=True)
    vae_run = ls.open_run(out / "sentence_vae")
    show(results, vae_run.model, held_out(vae_run.config).images, args)
    print(f"runs kept in {out}")
    return 0


def train_and_score(args: argparse.Namespace, family: str, out: Path) -> dict[str, Any]:
    """Train `family` for the time budget under out/family and score it on the test split."""
    config = ls.apply_overrides(ls.default_config(), settings(args, family))
    started = time.perf_counter()
    run = ls.train(
        config, out / family, quiet=True, report=False, callbacks=[TimeBudget(args.minutes * 60)]
    )
    epochs = [r for r in run.metrics if r.get("kind") == "epoch"]
    minutes = (time.perf_counter() - started) / 60
    test = held_out(run.config).images
    assert test is not None
    ids = test.images[: args.test_limit or None]
    t0 = time.perf_counter()
    scores = evaluate_text(run.model, ids, samples=args.samples)
    scores.update(epochs=len(epochs), train_minutes=round(minutes, 2))
    scores["eval_minutes"] = round((time.perf_counter() - t0) / 60, 2)
    return scores


def show(results: dict[str, Any], model: Any, test: Any, args: argparse.Namespace) -> None:
    vae, lm = results["sentence_vae"], results["lm"]
    print(
        f"\nNLL (IWAE, K={args.samples}) per sentence: VAE {vae['nll']:.2f} vs LM {lm['nll']:.2f} "
        f"(target VAE <= LM: {'met' if vae['nll'] <= lm['nll'] else 'MISSED'})"
    )
    print(f"perplexity: VAE {vae['perplexity']:.1f} vs LM {lm['perplexity']:.1f}")
    print(
        f"KL per sentence {vae['kl']:.2f} nats (target >= 5: {'met' if vae['kl'] >= 5 else 'MISSED'})"
    )
    print(
        f"active units {vae['active_units']} of {vae['latent_dim']} "
        f"(target >= 8: {'met' if vae['active_units'] >= 8 else 'MISSED'})"
    )
    print(
        f"greedy token recovery {vae['token_accuracy']:.1%} (target >= 50%: "
        f"{'met' if vae['token_accuracy'] >= 0.5 else 'MISSED'}), BLEU {vae['bleu']:.1f}, "
        f"mutual information {vae['mutual_information']:.2f} nats"
    )
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(test), generator=generator)[:10].tolist()
    print("\nfive interpolations (greedy decoding of the homotopy, 5 steps):")
    for a, b in zip(pick[0::2], pick[1::2], strict=True):
        z = model.encode([test.sentences[a], test.sentences[b]])
        steps = torch.linspace(0, 1, 5).unsqueeze(1)
        path = (1 - steps) * z[0] + steps * z[1]
        print(f"  from: {test.sentences[a]}")
        for t, line in zip(steps.squeeze(1).tolist(), model.decode(path), strict=True):
            print(f"    {t:.2f}  {line}")
        print(f"  to:   {test.sentences[b]}")
    print("\ntwenty sentences generated from the prior (greedy):")
    for line in model.generate(20, generator=generator):
        print(f"  {line}")


if __name__ == "__main__":
    raise SystemExit(main())
