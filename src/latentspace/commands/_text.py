"""The commands for a run whose model reads text (`model.inputs == "text"`): the same commands as
for images, printing sentences where those save pictures.

`use.py` and `look.py` hand a text run to these functions right after opening it; each prints
one line per sentence (or per step, or per code) and writes a file only when --out is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from latentspace.analysis import latent
from latentspace.analysis.text_evaluate import collapse_verdict, evaluate_text, token_accuracy
from latentspace.data import held_out
from latentspace.data.text import TextSet, is_text, load_text, prepare_text
from latentspace.data.text_corpus import CORPORA
from latentspace.errors import ConfigError, DataError
from latentspace.runs import (
    Run,
    append_metrics,
    atomic_write,
    check_writable,
    lock_run,
    weights_sha256,
)

__all__ = [
    "STRATEGIES",
    "add_decoding_arguments",
    "decode",
    "encode",
    "evaluate",
    "generate",
    "interpolate",
    "map_codes",
    "neighbours",
    "reconstruct",
    "sentences_of",
    "traverse",
]

STRATEGIES = ("greedy", "beam", "sample")


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """How a text model writes its sentences (image models ignore these)."""
    group = parser.add_argument_group("text models")
    group.add_argument("--strategy", choices=STRATEGIES, help="greedy (default), beam or sample")
    group.add_argument("--beam", type=int, default=5, help="beam width (default 5)")
    group.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (default 1)"
    )


def sentences_of(spec: str, limit: int | None = None) -> list[str]:
    """What a user gave as text: a corpus name (`fortunes:test`, default split test), a .txt file
    or folder of them, or else the sentence itself."""
    name = spec.partition(":")[0]
    if name in CORPORA or Path(spec).expanduser().exists():
        if not is_text(spec):
            raise DataError(f"{spec} is not text: give a sentence, a .txt file or a corpus name")
        found = load_text(spec, default_split="test")
    else:
        found = [spec.strip()]
    if not found or not found[0]:
        raise DataError("give a sentence, a .txt file or a corpus name; got nothing")
    return found[:limit] if limit else found


def _text_model(run: Run) -> Any:
    """The run's model through its text interface (GenerativeModel.inputs == "text": encode takes
    sentences, decode and generate return them and take a decoding strategy)."""
    return run.model


def _decode(run: Run, z: torch.Tensor, args: argparse.Namespace) -> list[str]:
    generator = torch.Generator().manual_seed(getattr(args, "seed", 0) or 0)
    strategy = getattr(args, "strategy", None) or "greedy"
    return list(
        _text_model(run).decode(
            z.to(_text_model(run).device),
            strategy=strategy,
            beam=getattr(args, "beam", 5),
            temperature=getattr(args, "temperature", 1.0),
            generator=generator,
        )
    )


def _needs_code(run: Run, command: str) -> None:
    if not _text_model(run).latent_dim:
        raise ConfigError(
            f"{command}: a {_text_model(run).name} model has no code (a language model); "
            "use `latentspace generate` or `evaluate`"
        )


def encode(args: argparse.Namespace, run: Run) -> int:
    _needs_code(run, "encode")
    sentences = sentences_of(args.input, args.limit)
    generator = torch.Generator().manual_seed(args.seed)
    codes = torch.cat(
        [
            _text_model(run)
            .encode(sentences[i : i + 256], sample=args.sample, generator=generator)
            .cpu()
            for i in range(0, len(sentences), 256)
        ]
    )
    array = codes.numpy().astype(args.dtype)
    if args.out is None:
        for sentence, code in zip(sentences, array, strict=True):
            print(f"{sentence}\t{' '.join(f'{v:.3f}' for v in code)}")
        return 0
    out = args.out if args.out.suffix == ".npz" else args.out.with_suffix(".npz")
    payload: dict[str, Any] = {
        "codes": array,
        "sentences": np.array(sentences),
        "run": np.array(str(run.path)),
        "weights_sha256": np.array(weights_sha256(run.path)),
        "source": np.array(args.input),
    }

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **payload)

    atomic_write(out, write)
    print(f"encoded {len(array)} sentences -> {array.shape[1]} {args.dtype} each into {out}")
    return 0


def decode(args: argparse.Namespace, run: Run, codes: np.ndarray) -> int:
    sentences = _decode(run, torch.from_numpy(codes.astype(np.float32)), args)
    _emit(sentences, args.out)
    return 0


def generate(args: argparse.Namespace, run: Run) -> int:
    generator = torch.Generator().manual_seed(args.seed)
    strategy = args.strategy or ("greedy" if _text_model(run).latent_dim else "sample")
    sentences = _text_model(run).generate(
        args.n, generator=generator, strategy=strategy, temperature=args.temperature
    )
    _emit(list(sentences), args.out)
    return 0


def _emit(sentences: list[str], out: Path | None) -> None:
    """One sentence a line on stdout, or into the text file `out`."""
    text = "".join(s + "\n" for s in sentences)
    if out is None:
        print(text, end="")
        return
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"wrote {len(sentences)} sentences to {out}")


def reconstruct(args: argparse.Namespace, run: Run) -> int:
    _needs_code(run, "reconstruct")
    sentences = sentences_of(args.input, args.n)
    model = _text_model(run)
    ids = model.token_ids(sentences)
    decoded = model.decode_ids(model.encode(ids))
    hits, total = token_accuracy(ids.cpu(), decoded.cpu())
    lines = []
    for original, again in zip(model.to_text(ids), model.to_text(decoded), strict=True):
        lines += [f"  {original}", f"> {again}"]
    _emit(lines, args.out)
    print(f"{hits} of {total} tokens recovered ({hits / max(total, 1):.1%}), greedy decoding")
    return 0


def interpolate(args: argparse.Namespace, run: Run) -> int:
    _needs_code(run, "interpolate")
    codes = _text_model(run).encode([args.source, args.target]).cpu()
    path = latent.interpolate(codes[0], codes[1], args.steps, args.mode)
    sentences = _decode(run, path, args)
    print(f"from: {args.source}")
    for t, sentence in zip(torch.linspace(0, 1, args.steps).tolist(), sentences, strict=True):
        print(f"{t:5.2f}  {sentence}")
    print(f"to:   {args.target}")
    return 0


def evaluate(args: argparse.Namespace, run: Run) -> int:
    check_writable(run.path / "metrics.jsonl")
    with lock_run(run.path, "evaluate"):
        pass
    ids, name = _evaluation_sentences(run, args.split)
    ids = ids[: args.limit or None]
    start = time.perf_counter()
    samples = 100 if args.nll_samples is None else max(1, args.nll_samples)
    result = evaluate_text(
        _text_model(run), ids, samples=samples, batch_size=max(1, args.batch_size), seed=args.seed
    )
    record: dict[str, Any] = {
        "kind": "evaluation",
        "data": f"{len(ids)} sentences of {name}",
        "split": args.split,
        **result,
        "seconds": round(time.perf_counter() - start, 2),
    }
    append_metrics(run.path, record)
    if args.json:
        print(json.dumps(record))
        return 0
    for line in describe(record, getattr(_text_model(run), "collapse_advice", "")):
        print(line)
    return 0


def _evaluation_sentences(run: Run, split: str) -> tuple[torch.Tensor, str]:
    """(token ids, what they are) of `split`: test (a named corpus's test split, else the run's
    held-out sentences, as `held_out` chooses), val (the run's validation sentences) or train."""
    if split == "test":
        chosen = held_out(run.config)
        if chosen.images is None:
            raise DataError(f"{run.path} has no held-out sentences (data.val_fraction = 0)")
        return cast(TextSet, chosen.images).ids, chosen.name
    if split not in ("val", "train"):
        raise ConfigError(f"--split {split!r} is not one of: test, val, train")
    train, val = prepare_text(run.config)
    chosen_set = train if split == "train" else val
    if chosen_set is None:
        raise DataError(f"{run.path} was trained without validation sentences; use --split train")
    # a named corpus's splits are named (fortunes:valid); a file's two parts share its path
    source = chosen_set.source
    same = source == run.config.data.dataset
    return chosen_set.ids, f"{source} (the run's {split} sentences)" if same else source


def describe(r: dict[str, Any], advice: str = "") -> list[str]:
    """A text evaluation record as sentences a person reads; `advice`: what to try when the
    posterior collapsed (the family's `collapse_advice`)."""
    lines = [
        f"evaluated on {r['data']} ({r['tokens']} tokens, end of sentence included)",
        f"NLL {r['nll']:.2f} nats per sentence ("
        + (f"IWAE bound, K={r['samples']}" if r["latent_dim"] else "exact: no code to bound")
        + f"), perplexity "
        f"{r['perplexity']:.1f}; negative ELBO {r['negative_elbo']:.2f}, KL {r['kl']:.2f} nats",
    ]
    if "active_units" in r:
        lines += [
            f"active units {r['active_units']}/{r['latent_dim']} (Cov_x E_q[z] > "
            f"{r['active_unit_threshold']:g}), mutual information I(x; z) "
            f"{r['mutual_information']:.2f} nats",
            f"greedy reconstructions: {r['token_accuracy']:.1%} of tokens recovered, "
            f"BLEU {r['bleu']:.1f}",
        ]
    lines.append(collapse_verdict(r, advice))
    lines.append(f"took {r['seconds']} s; appended to metrics.jsonl")
    return lines


def neighbours(args: argparse.Namespace, run: Run) -> int:
    """The training sentences whose codes lie nearest the query's (Euclidean distance)."""
    _needs_code(run, "neighbours")
    model = _text_model(run)
    pool = (
        sentences_of(args.dataset, args.limit)
        if args.dataset
        else prepare_text(run.config)[0].sentences[: args.limit or None]
    )
    codes = torch.cat([model.encode(pool[i : i + 256]).cpu() for i in range(0, len(pool), 256)])
    query = model.encode([args.query]).cpu()
    k = min(args.k, len(pool))
    distances, indices = latent.nearest_neighbours(query, codes, k)
    print(f"query: {args.query}")
    for distance, index in zip(distances[0].tolist(), indices[0].tolist(), strict=True):
        print(f"{distance:8.3f}  {pool[index]}")
    return 0


def map_codes(args: argparse.Namespace, run: Run) -> int:
    """`map`: a 2-D scatter of held-out sentences' codes (args.out, a PNG) and the same scatter
    as an HTML page beside it whose points show their sentence on hover."""
    from latentspace.analysis.text_report import held_out_sentences, write_map

    _needs_code(run, "map")
    model = _text_model(run)
    if args.dataset:
        pool, source = sentences_of(args.dataset, args.limit), args.dataset
    else:
        _, pool, source = held_out_sentences(run)
        pool = pool[: args.limit or None]
    codes = torch.cat([model.encode(pool[i : i + 256]).cpu() for i in range(0, len(pool), 256)])
    page = args.out.with_suffix(".html")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{len(codes)} codes of {source} ({args.method} view)"
    axes = write_map(codes, pool, args.out, page, title, method=args.method, seed=args.seed)
    print(f"wrote {args.out} and {page} ({title}, {axes[0]} by {axes[1]}; hover for sentences)")
    return 0


def traverse(args: argparse.Namespace, run: Run, dims: list[int]) -> int:
    """Each chosen dimension moved from -range to +range prior standard deviations around the
    input's code (or the prior mean), one decoded sentence a step."""
    _needs_code(run, "traverse")
    model = _text_model(run)
    if args.input:
        z = model.encode([args.input]).cpu()[0]
        name = repr(args.input)
    else:
        z, name = torch.zeros(model.latent_dim), "the prior mean"
    values = torch.linspace(-args.range, args.range, args.steps)
    print(f"around {name}:")
    for dim in dims:
        path = z.repeat(args.steps, 1)
        path[:, dim] = z[dim] + values
        print(f"z{dim}:")
        for value, sentence in zip(values.tolist(), _decode(run, path, args), strict=True):
            print(f"  {value:+5.2f}  {sentence}")
    return 0
