"""A text run's report and map show sentences (escaped) where an image run's show pictures, and
say in words whether the posterior collapsed. Tiny generated corpora only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import latentspace as ls
from latentspace.analysis.text_evaluate import collapse_verdict, evaluate_text, is_collapsed
from latentspace.cli import main
from latentspace.runs import open_run
from test_text import sentences, text_config

MARK = "<b>&"  # in some sentences: the page must show it escaped, never as markup


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    lines = [s if i % 3 else f"{s[:-1]} {MARK}." for i, s in enumerate(sentences(80))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train(corpus: Path, family: str) -> Path:
    run = corpus.parent / family
    config = text_config(corpus, family, "train.epochs=1", "data.val_fraction=0.25")
    ls.train(config, run, quiet=True, report=True, diagnostics=False)
    return run


@pytest.fixture(scope="module")
def vae_run(corpus: Path) -> Path:
    return _train(corpus, "sentence_vae")


def _sections(page: str) -> dict[str, str]:
    parts = re.split(r"<h2>(.*?)</h2>", page)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_report_of_a_sentence_vae_shows_escaped_sentences(vae_run: Path) -> None:
    page = (vae_run / "report.html").read_text()
    sections = _sections(page)
    assert "could not be made" not in page and "Not made" not in page
    for heading in ("Reconstructions", "Samples", "Interpolation", "Latent map", "Metrics"):
        assert "<table>" in sections[heading] or "<svg" in sections[heading], heading
    assert MARK not in page and "&lt;b&gt;&amp;" in page
    assert sections["Samples"].count("<tr>") == 1 + 20  # header + the 20 generated sentences
    assert sections["Interpolation"].count("<tr>") == 1 + 8
    run = open_run(vae_run)
    held_out = round(80 * 0.25)
    assert sections["Latent map"].count("<title>") == held_out  # one hover title a sentence
    for name in ("perplexity", "active_units", "mutual_information", "token_accuracy", "bleu"):
        assert f"<td>{name}</td>" in sections["Metrics"]
    verdict = sections["Posterior collapse"]
    assert ("Posterior collapse:" in verdict) or ("No posterior collapse" in verdict)
    assert f"of {run.model.latent_dim} latent units active" in verdict


def test_the_report_of_a_language_model_says_it_has_no_code(corpus: Path) -> None:
    page = (_train(corpus, "lm") / "report.html").read_text()
    sections = _sections(page)
    assert "could not be made" not in page
    for heading in ("Reconstructions", "Interpolation", "Latent map"):
        assert "has no code" in sections[heading]
    assert sections["Samples"].count("<tr>") == 21
    assert "no code, so nothing to collapse" in sections["Posterior collapse"]


def test_map_of_a_text_run_writes_a_scatter_and_a_page_with_sentences_on_hover(
    vae_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "maps" / "map.png"
    assert main(["map", str(vae_run), "--out", str(out), "--limit", "12"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    page = out.with_suffix(".html").read_text()
    titles = re.findall(r"<title>(.*?)</title>", page)
    assert len(titles) == 1 + 12  # the page's own title, then one per sentence
    assert MARK not in page
    assert "hover for sentences" in capsys.readouterr().out


def test_evaluate_text_records_each_dimension_and_they_add_up(vae_run: Path) -> None:
    from latentspace.analysis.text_report import held_out_sentences

    run = open_run(vae_run)
    ids = held_out_sentences(run)[0]
    record = evaluate_text(run.model, ids, samples=3)
    assert len(record["kl_per_dim"]) == run.model.latent_dim
    assert sum(record["kl_per_dim"]) == pytest.approx(record["kl"], rel=1e-3, abs=1e-4)
    assert len(record["posterior_mean_variance"]) == run.model.latent_dim


def test_the_collapse_verdict_follows_the_diagnostics_rule() -> None:
    base = {"latent_dim": 32, "kl": 0.01, "mutual_information": 0.0}
    collapsed = {**base, "active_units": 3}  # 3/32 <= 10%: collapsed
    used = {**base, "active_units": 4, "kl": 6.5}
    assert is_collapsed(collapsed) and not is_collapsed(used)
    said = collapse_verdict(collapsed, "try free bits")
    assert said.startswith("posterior collapse") and "3 of 32" in said and "try free bits" in said
    said = collapse_verdict(used, "try free bits")
    assert said.startswith("no posterior collapse") and "KL 6.50 nats" in said
    assert "try" not in said
    assert not is_collapsed({"latent_dim": 0, "kl": 0.0})
