"""A text run where image tools meet it: the report writes and keeps its config table short
(the tokenizer is ~100 KB of JSON), export and the explorer refuse it in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

import latentspace as ls
from latentspace.cli import main
from test_text import one_line, sentences, text_config


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(sentences(80)) + "\n", encoding="utf-8")
    run = folder / "run"
    config = text_config(corpus, "sentence_vae", "train.epochs=1")
    ls.train(config, run, quiet=True, report=False, diagnostics=False)
    return run


def test_the_report_of_a_text_run_names_the_tokenizer_by_its_length(text_run: Path) -> None:
    from latentspace.analysis.report import write_report

    page = Path(write_report(text_run, quiet=True)).read_text()
    assert "characters&gt;" in page or "characters>" in page
    assert "merges" not in page and "vocab" not in page


def test_export_and_explore_refuse_a_text_run_in_one_line(
    text_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentspace.errors import LatentspaceError
    from latentspace.explorer.session import open_explorer
    from latentspace.export import export_run
    from latentspace.runs import open_run

    with pytest.raises(LatentspaceError) as error:
        export_run(text_run, text_run.parent / "onnx")
    one_line(error.value, "text", "image models only")
    assert not (text_run.parent / "onnx").exists()
    with pytest.raises(LatentspaceError) as error:
        open_explorer(open_run(text_run), progress=False)
    one_line(error.value, "text model", "neighbours")
    assert main(["export", str(text_run), "--out", str(text_run.parent / "onnx2")]) != 0
    assert "image models only" in capsys.readouterr().err
