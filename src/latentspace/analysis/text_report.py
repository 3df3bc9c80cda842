"""The report of a run whose model reads text (`model.inputs == "text"`): sentences where an image
run's report has pictures.

`report.write_report` hands a text run here. The page shows held-out sentences and their greedy
reconstructions, sentences generated from the prior, one interpolation, a map of test-sentence
codes whose points name their sentence on hover, the evaluation (NLL and perplexity, KL, active
units, mutual information, token accuracy, BLEU) and whether the posterior collapsed, in words.
Every sentence is HTML-escaped (`html.table` and `html.escape`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from latentspace.analysis import latent
from latentspace.analysis.figures import _scatter, kl_figure, loss_figure
from latentspace.analysis.text_evaluate import collapse_verdict, evaluate_text, is_collapsed
from latentspace.data.text import text_held_out
from latentspace.html import escape, table, write_page
from latentspace.runs import Run

__all__ = ["code_map", "held_out_sentences", "svg_scatter", "write_map", "write_text_report"]

_SHOWN = 8  # held-out sentences reconstructed on the page
_GENERATED = 20
_STEPS = 8  # interpolation steps, ends included
_MAP_SENTENCES = 1000
_QUICK_SENTENCES = 300  # a report without an evaluation record evaluates this many sentences
_QUICK_SAMPLES = 20  # ... with this many importance samples for the NLL bound


def held_out_sentences(run: Run) -> tuple[torch.Tensor, list[str], str]:
    """(ids (N, T), sentences, source) the run did not train on; its training sentences (saying
    so) when it kept none aside."""
    test, train, name, _ = text_held_out(run.config)
    if test is None:
        return train.ids, list(train.sentences), f"{train.source} (training sentences)"
    return test.ids, list(test.sentences), name


def code_map(
    codes: torch.Tensor, method: str = "pca", seed: int = 0
) -> tuple[torch.Tensor, tuple[str, str]]:
    """Codes (N, D) -> 2-D points (N, 2) and their axis names: the codes themselves when D <= 2,
    else PCA, t-SNE or UMAP (`latent.MAP_METHODS`)."""
    if codes.shape[1] <= 2:
        points = torch.cat([codes, codes.new_zeros(len(codes), 2 - codes.shape[1])], dim=1)
        return points, ("z0", "z1" if codes.shape[1] == 2 else "(none)")
    if method != "pca":
        return latent.embed(codes, method, seed=seed)
    return latent.pca(codes)[0], ("PC1", "PC2")


def svg_scatter(
    points: torch.Tensor, sentences: list[str], axes: tuple[str, str], size: int = 560
) -> str:
    """An inline SVG scatter whose every point shows its sentence on hover. Hand-written: an
    SVG <title> is the browser's own tooltip, so the page needs no script and stays small and
    self-contained (a plotting library would embed megabytes of JavaScript)."""
    xy = points.detach().double().cpu()
    low, high = xy.min(0).values, xy.max(0).values
    span = (high - low).clamp_min(1e-12)
    pad = 20
    scaled = pad + (xy - low) / span * (size - 2 * pad)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="3.5"><title>{escape(s)}</title></circle>'
        for (x, y), s in zip(scaled.tolist(), sentences, strict=True)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" role="img" style="border:1px solid #eee">'
        f'<g fill="#1f77b4" fill-opacity="0.6">{dots}</g>'
        f'<text x="{size / 2}" y="{size - 4}" font-size="11" text-anchor="middle">'
        f"{escape(axes[0])}</text>"
        f'<text x="10" y="{size / 2}" font-size="11" transform="rotate(-90 10 {size / 2})" '
        f'text-anchor="middle">{escape(axes[1])}</text></svg>'
    )


def write_text_report(run: Run, sections: Any, *, quiet: bool = False) -> Path:
    """Write the run's report.html (see the module docstring) through the image report's
    `_Sections` (a part that fails becomes a sentence saying why); returns the page."""
    from latentspace.analysis.report import (
        _config_table,
        _diagnostics_html,
        _make_all,
    )

    model: Any = run.model  # its text interface: encode takes sentences, decode returns them
    folder = sections.folder
    model.eval()
    has_code = bool(model.latent_dim)
    state: dict[str, Any] = {}
    no_code = '<p class="note">A language model has no code: nothing to {}.</p>'

    def data() -> tuple[torch.Tensor, list[str], str]:
        if "data" not in state:
            with warnings.catch_warnings():  # training said it once; the page is not the place
                warnings.filterwarnings("ignore", message=".* longer than .* tokens")
                state["data"] = held_out_sentences(run)
        return state["data"]

    def losses() -> str:
        terms = loss_figure(run.metrics, folder / "losses.png")
        return sections.figure("losses.png", f"{', '.join(terms)} per epoch (nats per sentence)")

    def reconstructions() -> str:
        if not has_code:
            return no_code.format("reconstruct from")
        ids, _, source = data()
        shown = ids[:_SHOWN].to(model.device)
        with torch.no_grad():
            again = model.to_text(model.decode_ids(model.encode(shown)))
        rows = list(zip(model.to_text(shown), again, strict=True))
        note = f"The first {len(rows)} sentences of {source}, encoded (posterior mean) and decoded"
        return f'<p class="note">{escape(note)} greedily.</p>' + table(
            rows, ["input", "greedy reconstruction"]
        )

    def samples() -> str:
        generator = torch.Generator().manual_seed(0)
        sentences = model.generate(_GENERATED, generator=generator)
        how = "codes drawn from N(0, I), decoded greedily" if has_code else "sampled, temperature 1"
        note = f"{len(sentences)} sentences from the model's prior ({how}), seed 0."
        return f'<p class="note">{escape(note)}</p>' + table(
            [(i, s) for i, s in enumerate(sentences)], ["", "sentence"]
        )

    def interpolation() -> str:
        if not has_code:
            return no_code.format("interpolate")
        ids, _, source = data()
        if len(ids) < 2:
            return f'<p class="note">{escape(source)} has fewer than 2 sentences.</p>'
        with torch.no_grad():
            ends = model.encode(ids[:2].to(model.device)).cpu()
            path = latent.interpolate(ends[0], ends[1], _STEPS, "lerp")
            sentences = model.decode(path.to(model.device))
        steps = torch.linspace(0, 1, _STEPS).tolist()
        first, last = model.to_text(ids[:2])
        note = (
            f"From sentence 0 ({first!r}) to sentence 1 ({last!r}) of {source}: the codes on the "
            f"straight line between theirs, {_STEPS} steps, decoded greedily"
        )
        return f'<p class="note">{escape(note)}.</p>' + table(
            [(f"{t:.2f}", s) for t, s in zip(steps, sentences, strict=True)], ["t", "sentence"]
        )

    def code_map_section() -> str:
        if not has_code:
            return no_code.format("map")
        ids, _, source = data()
        ids = ids[:_MAP_SENTENCES]
        with torch.no_grad():
            codes = torch.cat(
                [
                    model.encode(ids[i : i + 256].to(model.device)).cpu()
                    for i in range(0, len(ids), 256)
                ]
            )
        points, axes = code_map(codes)
        note = f"The codes of {len(codes)} sentences of {source} ({axes[0]}, {axes[1]})"
        return f'<p class="note">{escape(note)}; hover over a point to read its sentence.</p>' + (
            svg_scatter(points, data()[1][: len(ids)], axes)  # the sentences as written
        )

    def evaluation() -> tuple[dict[str, Any], str]:
        if "record" not in state:
            records = [r for r in run.metrics if r.get("kind") == "evaluation"]
            if records:
                state["record"] = records[-1], "the run's latest `latentspace evaluate` record"
            else:
                ids = data()[0][:_QUICK_SENTENCES]
                state["record"] = (
                    evaluate_text(model, ids, samples=_QUICK_SAMPLES),
                    (
                        f"a quick evaluation made for this report ({len(ids)} sentences of "
                        f"{data()[2]}, K={_QUICK_SAMPLES} for the NLL bound); run `latentspace "
                        "evaluate` for the full numbers"
                    ),
                )
        return state["record"]

    def metrics() -> str:
        from latentspace.analysis.report import _metrics_table

        record, note = evaluation()
        html = f'<p class="note">From {escape(note)}.</p>' + _metrics_table(record)
        if record.get("kl_per_dim") and record.get("posterior_mean_variance"):
            kl_figure(record, folder / "kl-per-dimension.png")
            html += sections.figure(
                "kl-per-dimension.png",
                f"{record['active_units']} of {record['latent_dim']} latent units are active "
                "(blue, above the dashed line): top, the spread of each unit's posterior mean "
                "across the sentences; bottom, each unit's KL in nats",
            )
        return html

    def collapse() -> str:
        record, _ = evaluation()
        verdict = collapse_verdict(record, getattr(model, "collapse_advice", ""))
        kind = "warn" if record.get("latent_dim") and is_collapsed(record) else "note"
        return f'<p class="{kind}">{escape(verdict[0].upper() + verdict[1:])}.</p>'

    planned = [
        ("Loss curves", losses),
        ("Training diagnostics", lambda: _diagnostics_html(folder, sections)),
        ("Reconstructions", reconstructions),
        ("Samples", samples),
        ("Interpolation", interpolation),
        ("Latent map", code_map_section),
        ("Metrics", metrics),
        ("Posterior collapse", collapse),
        ("Configuration", lambda: _config_table(run)),
    ]
    return _make_all(sections, planned, folder, quiet, run, "sentences")


def write_map(
    codes: torch.Tensor, sentences: list[str], png: Path, page: Path, title: str, **kwargs: Any
) -> tuple[str, str]:
    """`latentspace map` of a text run: the scatter as a PNG and as an HTML page whose points show
    their sentence on hover. kwargs: `code_map`'s method and seed. Returns the axis names."""
    points, axes = code_map(codes, **kwargs)
    _scatter(points, None, None, axes, png, title)
    write_page(page, title, [("Map", svg_scatter(points, sentences, axes))])
    return axes
