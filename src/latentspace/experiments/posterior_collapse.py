"""posterior-collapse: a sentence VAE trained on the plain ELBO against the same with free bits.

Bowman et al. (2016) found that a sentence VAE with a strong autoregressive decoder, trained on
the ELBO as it stands, learns to ignore its code: the KL falls to about 0 and no latent unit
varies across sentences. Free bits (Kingma et al. 2016) leave each dimension's first nats
unpenalised, so the code keeps the information the decoder can use. Both trials are the same
sentence VAE on the same slice of a text corpus, word dropout and KL annealing off in both; only
`model.free_bits` changes. Each is judged on held-out sentences by `evaluate_text`: KL, active
units (the rule the training diagnostics use), mutual information, and the NLL bound.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from typing import Any

from latentspace import html
from latentspace.analysis.text_evaluate import evaluate_text, is_collapsed
from latentspace.errors import ConfigError
from latentspace.experiments._common import (
    Check,
    Context,
    Experiment,
    Trial,
    figure,
    fmt,
    line_plot,
    run_trial,
)

NAME = "posterior-collapse"
# the slice and the model: small enough for a few minutes on 2 CPU cores
N_TRAIN = 4000  # training sentences at most (fewer on a smaller corpus)
N_EVAL = 300  # held-out sentences each trial is judged on
MODEL = {"embedding_dim": 64, "hidden_size": 128, "latent_dim": 16}
FREE_BITS = 0.5  # nats per latent dimension
COLLAPSED_KL = 1.0  # nats per sentence: "toward 0" for a 16-dimensional code
EVAL_SAMPLES = 10  # importance samples of the NLL bound (reported, not judged)
TRIALS = {
    "plain ELBO": {"free_bits": 0.0},
    f"free bits {FREE_BITS:g}": {"free_bits": FREE_BITS},
}


def _family() -> str:
    """The registered family this experiment trains, by what it declares (no family is named
    outside models/): one that reads text and has a code and free bits."""
    from latentspace.models import MODELS

    for name, family in MODELS.items():
        settings = {field.name for field in dataclasses.fields(family.config_class)}
        if family.inputs == "text" and {"latent_dim", "free_bits"} <= settings:
            return name
    raise ConfigError("no registered model family reads text with a code and free bits")


def _config(ctx: Context, epochs: int, changes: dict[str, Any]) -> Any:
    """The held-constant setup: the sentence VAE at MODEL's size, no word dropout, no KL
    annealing (beta 1 from the first step), Adam 1e-3, batch 32, one thread."""
    import latentspace as ls

    return ls.default_config(
        _family(),
        dataset=ctx.dataset,
        epochs=max(1, epochs),
        device="cpu",
        threads=1,
        seed=ctx.seed,
        batch_size=32,
        limit=N_TRAIN,
        word_dropout=0.0,
        kl_schedule="none",
        **MODEL,
        **changes,
    )


def _epochs(ctx: Context) -> int:
    """Epochs that fit the budget: one calibration epoch of the plain trial gives the pace (with
    its fixed costs, so the estimate errs short). Sets the trials' planned seconds (progress)."""
    start = time.perf_counter()
    calibration = run_trial(ctx, NAME, "_calibration", _config(ctx, 1, TRIALS["plain ELBO"]))
    pace = max(time.perf_counter() - start, 1e-3)
    shutil.rmtree(calibration.path, ignore_errors=True)
    planned = 0.7 * ctx.budget_s - pace  # the rest: evaluation, figures, a busier machine
    epochs = max(1, min(100, int(planned / len(TRIALS) / pace)))
    ctx.planned = [pace * epochs] * len(TRIALS)
    ctx.measured = []
    return epochs


def _judge(trial: Trial) -> dict[str, Any]:
    """The trained trial's numbers on the first N_EVAL held-out sentences."""
    from latentspace.analysis.text_report import held_out_sentences
    from latentspace.runs import open_run

    run = open_run(trial.path)
    ids = held_out_sentences(run)[0][:N_EVAL]
    record = evaluate_text(run.model, ids, samples=EVAL_SAMPLES, seed=0)
    said = [w for r in trial.diagnostics for w in r.get("warnings", [])]
    record["diagnosed_collapse"] = any("posterior collapse" in w for w in said)
    return record


def checks_for(rows: dict[str, dict[str, Any]]) -> list[Check]:
    """rows: trial name -> its evaluation record (kl, active_units, latent_dim, ...)."""
    plain, floored = rows["plain ELBO"], rows[f"free bits {FREE_BITS:g}"]

    def numbers(r: dict[str, Any]) -> str:
        return (
            f"KL {r['kl']:.2f} nats, {r['active_units']}/{r['latent_dim']} active units, "
            f"I(x; z) {r['mutual_information']:.2f} nats"
        )

    return [
        Check(
            f"on the plain ELBO the KL collapses toward 0 (below {COLLAPSED_KL:g} nat per "
            "sentence) and (almost) no latent unit is active",
            plain["kl"] < COLLAPSED_KL and is_collapsed(plain),
            numbers(plain),
        ),
        Check(
            f"with free bits ({FREE_BITS:g} nats per dimension) the code stays used: more than "
            "10% of the units active, and a KL and a mutual information I(x; z) above the plain "
            "ELBO's",
            not is_collapsed(floored)
            and floored["kl"] > plain["kl"]
            and floored["mutual_information"] > plain["mutual_information"],
            numbers(floored),
        ),
    ]


def run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    with warnings.catch_warnings():  # each trial re-reads the corpus: one warning is enough
        warnings.filterwarnings("once", message=".* longer than .* tokens")
        return _run(ctx)


def _run(ctx: Context) -> tuple[list[Check], list[tuple[str, str]]]:
    epochs = _epochs(ctx)
    trials = {
        name: run_trial(ctx, NAME, name.replace(" ", "-"), _config(ctx, epochs, changes))
        for name, changes in TRIALS.items()
    }
    rows = {name: _judge(trial) for name, trial in trials.items()}
    checks = checks_for(rows)
    out = ctx.out / NAME
    kl_png = line_plot(
        out / "kl.png",
        {name: [e["val"]["kl"] for e in t.epochs] for name, t in trials.items()},
        ylabel="validation KL (nats per sentence)",
        title="KL of the posterior from the prior, per epoch",
    )
    table = html.table(
        [
            [
                name,
                fmt(r["kl"], ".3f"),
                f"{r['active_units']}/{r['latent_dim']}",
                fmt(r["mutual_information"], ".3f"),
                fmt(r["nll"], ".2f"),
                fmt(r["perplexity"], ".1f"),
                f"{r['token_accuracy']:.1%}",
                "yes" if r["diagnosed_collapse"] else "no",
            ]
            for name, r in rows.items()
        ],
        [
            "trial",
            "KL",
            "active units",
            "I(x; z)",
            "NLL",
            "perplexity",
            "tokens recovered",
            "diagnostics warned",
        ],
    )
    n_train = min(N_TRAIN, _train_size(trials["plain ELBO"]))
    setup = (
        f"<p>Sentence VAE (embedding {MODEL['embedding_dim']}, GRU {MODEL['hidden_size']}, "
        f"latent {MODEL['latent_dim']}), Adam 1e-3, batch 32, {n_train} training sentences of "
        f"{html.escape(ctx.dataset)}, {epochs} epochs, no word dropout, no KL annealing; only "
        f"the free bits change. Judged on {N_EVAL} held-out sentences (NLL: IWAE bound, "
        f"K={EVAL_SAMPLES}, nats per sentence).</p>"
    )
    return checks, [
        ("Setup", setup),
        ("Numbers", table),
        ("KL per epoch", figure(kl_png, "validation KL per epoch")),
    ]


def _train_size(trial: Trial) -> int:
    from latentspace.runs import open_run

    return int(open_run(trial.path).info.get("train_images", N_TRAIN))


EXPERIMENT = Experiment(
    NAME,
    "posterior collapse: a sentence VAE with and without free bits",
    "Trained on the plain ELBO (no word dropout, no free bits, no KL annealing), a sentence "
    "VAE's KL collapses toward 0 nats and its decoder ignores the code; with free bits the code "
    "stays used.",
    run,
    inputs="text",
)
