"""The posterior-collapse experiment: its verdict comes from the measured numbers and can come out
either way; a tiny generated corpus runs it end to end in seconds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from latentspace.cli import main
from latentspace.experiments import EXPERIMENTS, posterior_collapse, run_experiment, verdict_of
from test_text import sentences

FLOORED = f"free bits {posterior_collapse.FREE_BITS:g}"


def _record(kl: float, active: int, information: float = 0.0) -> dict[str, float]:
    return {"kl": kl, "active_units": active, "latent_dim": 16, "mutual_information": information}


def test_the_verdict_follows_the_numbers() -> None:
    collapsed, used = _record(0.05, 0), _record(8.2, 12, 2.5)
    assert verdict_of(posterior_collapse.checks_for({"plain ELBO": collapsed, FLOORED: used}))
    # the plain ELBO kept its code: the first part fails
    checks = posterior_collapse.checks_for({"plain ELBO": used, FLOORED: used})
    assert not checks[0].passed and not verdict_of(checks)
    # free bits did not save the code (1 of 16 units, at most 10%: collapsed)
    checks = posterior_collapse.checks_for({"plain ELBO": collapsed, FLOORED: _record(3.0, 1, 2.5)})
    assert checks[0].passed and not checks[1].passed
    # more units vary but the code carries no more information than without free bits
    same_information = {**used, "mutual_information": collapsed["mutual_information"]}
    checks = posterior_collapse.checks_for({"plain ELBO": collapsed, FLOORED: same_information})
    assert not checks[1].passed
    assert "KL 0.05 nats, 0/16 active units" in checks[0].evidence


def test_the_experiment_runs_on_a_text_file_and_its_evidence_is_the_trials_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentspace.analysis.text_evaluate import evaluate_text
    from latentspace.analysis.text_report import held_out_sentences
    from latentspace.runs import open_run

    monkeypatch.setattr(
        posterior_collapse, "MODEL", {"embedding_dim": 8, "hidden_size": 16, "latent_dim": 4}
    )
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(60)) + "\n", encoding="utf-8")
    result = run_experiment(
        "posterior-collapse", tmp_path / "out", dataset=str(corpus), budget_minutes=0.01
    )
    assert [c.passed for c in result.checks] and len(result.checks) == 2
    folder = tmp_path / "out" / "posterior-collapse"
    assert sorted(p.name for p in (folder / "trials").iterdir()) == [
        "free-bits-0.5",
        "plain-ELBO",
    ]  # the calibration epoch is not kept
    page = result.page.read_text()
    assert "Verdict: " in page and "active units" in page and str(corpus) in page
    for check, trial in zip(result.checks, ("plain-ELBO", "free-bits-0.5"), strict=True):
        run = open_run(folder / "trials" / trial)
        ids = held_out_sentences(run)[0][: posterior_collapse.N_EVAL]
        record = evaluate_text(run.model, ids, samples=posterior_collapse.EVAL_SAMPLES, seed=0)
        found = re.match(r"KL (\S+) nats, (\d+)/4 active units", check.evidence)
        assert found is not None, check.evidence
        kl, active = found.groups()
        assert float(kl) == pytest.approx(record["kl"], abs=0.006)
        assert int(active) == record["active_units"]


def test_it_refuses_image_data_and_all_runs_only_the_image_experiments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["experiment", "posterior-collapse", "--dataset", "mnist", "--out", str(tmp_path)]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert "calibration epoch" in error[0]
    assert "--dataset fortunes or a .txt file" in error[-1] and len(error) == 2
    assert EXPERIMENTS["posterior-collapse"].inputs == "text"
    assert sum(e.inputs == "images" for e in EXPERIMENTS.values()) == 7
