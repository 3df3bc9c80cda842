"""The run report: one self-contained `report.html` (images embedded) with the PNGs beside it.

    from latentspace.analysis.report import write_report
    write_report("runs/mnist-vae")   # -> runs/mnist-vae/report.html

Every figure is made independently: one that cannot be made (a model without an encoder, a
dataset that moved) becomes a line in the report saying why, and the rest still appear. The
figure helpers here work through the generic model API (`encode`, `decode`, `sample_latent`),
so they serve every model family.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from latentspace.analysis import latent
from latentspace.analysis.evaluate import affordable_encodes
from latentspace.analysis.figures import (
    kl_figure,
    latent_map,
    loss_figure,
    traversal_images,
    traversal_labels,
)
from latentspace.data import ImageSet, batched, held_out, to_float
from latentspace.diagnostics.measure import ACTIVE_UNIT_THRESHOLD
from latentspace.errors import LatentspaceError
from latentspace.html import escape, img_tag, table, write_page
from latentspace.imaging import save_grid
from latentspace.models import GenerativeModel
from latentspace.progress import Progress
from latentspace.runs import Run, check_writable, open_run

__all__ = [
    "latest_quality",
    "report_images",
    "write_report",
    "write_training_report",
]

REPORT = "report.html"
_QUICK_IMAGES = 1000  # a report without an evaluation record evaluates this many images
_QUICK_SAMPLES = 100
_MAP_IMAGES = 1000  # images encoded for the interpolation, traversal and latent map
_ENCODE_BUDGET_S = 20.0  # ... fewer when encoding them would take longer than this


def report_images(run: Run, limit: int = 2000) -> ImageSet:
    """Images the run did not train on, as they are (grey): a named dataset's test split, else
    the run's validation images, else (saying so in the source) its training images."""
    chosen = held_out(run.config)
    images = chosen.images
    if images is None:
        train = chosen.train
        images = ImageSet(train.images, f"{train.source} (training images)", train.labels)
    return images.head(limit)


# ---- the page ---------------------------------------------------------------------------------
def _evaluation(run: Run, images: ImageSet) -> tuple[dict[str, Any], str]:
    """The latest evaluation record of the run, or a quick one made now (not saved)."""
    records = [r for r in run.metrics if r.get("kind") == "evaluation"]
    if records:
        return records[-1], "the run's latest `latentspace evaluate` record"
    from latentspace.analysis.evaluate import evaluate

    split = "test" if images.source.endswith(":test") else "val"
    try:
        record = evaluate(
            run,
            split,
            limit=min(_QUICK_IMAGES, len(images)),
            nll_samples=_QUICK_SAMPLES if run.model.has_likelihood() else 0,
            quiet=True,  # the report says its own phases
        )
    except LatentspaceError:
        record = evaluate(
            run, "train", limit=min(_QUICK_IMAGES, len(images)), nll_samples=0, quiet=True
        )
    note = (
        f"a quick evaluation made for this report (at most {_QUICK_IMAGES} images, K="
        f"{_QUICK_SAMPLES} for the NLL); run `latentspace evaluate` for the full numbers"
    )
    return record, note


def _metrics_table(record: dict[str, Any]) -> str:
    rows = []
    for key, value in record.items():
        if key == "kind" or isinstance(value, list | dict):
            continue
        shown = f"{value:.5g}" if isinstance(value, float) else value
        rows.append((key, shown))
    return table(rows, ["metric", "value"])


def _make_all(
    sections: _Sections,
    planned: list[tuple[str, Callable[[], str]]],
    folder: Path,
    quiet: bool,
    run: Run,
    data: str,
) -> Path:
    """Each planned section in turn (a failure is kept as its reason) under one progress bar,
    then the page: a line on the run (`data` says what it was trained on), the sections."""
    with Progress(f"report {folder}", len(planned), quiet=quiet) as progress:
        for heading, make in planned:
            progress.phase(heading.lower())
            sections.add(heading, make)
            progress.advance()
    summary = (
        f"<p>{escape(run.model.name)} on {escape(run.config.data.dataset)}, {data}, latent_dim "
        f"{run.model.latent_dim}, {_epochs(run)} epochs.</p>"
    )
    if sections.failed:
        summary += (
            f'<p class="warn">Not made: {escape(", ".join(sections.failed))} (reasons below).</p>'
        )
    items = [("Run", summary), *sections.items]
    return write_page(folder / REPORT, f"latentspace report: {folder.name}", items)


def _config_table(run: Run) -> str:
    from latentspace.config import config_to_dict

    # a long setting (a text model's tokenizer is ~100 KB of JSON) is named by its length
    rows = [
        (f"{section}.{key}", value if len(str(value)) < 200 else f"<{len(str(value))} characters>")
        for section, values in config_to_dict(run.config).items()
        for key, value in values.items()
    ]
    return table(rows, ["setting", "value"])


class _Sections:
    """Collects (heading, html) pairs; a figure that fails becomes a sentence saying why."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.items: list[tuple[str, str]] = []
        self.failed: list[str] = []

    def add(self, heading: str, make: Callable[[], str]) -> None:
        try:
            body = make()
        except Exception as error:  # the report never fails the run: it says what is missing
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.failed.append(heading)
            body = f'<p class="warn">This figure could not be made: {escape(reason)}</p>'
        self.items.append((heading, body))

    def figure(self, name: str, caption: str) -> str:
        return img_tag(self.folder / name, caption)


def write_training_report(
    run_dir: str | Path, *, quiet: bool = False, log: Callable[[str], None] = print
) -> Path | None:
    """The report training writes (the CLI's `train` and `ls.train`): a problem never fails the
    finished run, it becomes one warning line; returns the page, or None when it was not made."""
    try:
        path = write_report(run_dir, quiet=quiet)
    except Exception as error:
        log(f"warning: report not written ({type(error).__name__}: {error})".splitlines()[0])
        return None
    if not quiet:
        log(f"report: {path}")
    return path


def write_report(run_dir: str | Path, *, device: str = "cpu", quiet: bool = False) -> Path:
    """Write `report.html` and its PNGs into the run directory; returns the HTML's path. Says
    which figure it makes, n of N and the time left on stderr unless `quiet`."""
    folder = Path(run_dir)
    run = open_run(folder, device)
    check_writable(folder / REPORT)  # a read-only run: one line now, not after every figure
    model = run.model
    sections = _Sections(folder)
    if model.inputs == "text":  # sentences where this page has pictures
        from latentspace.analysis.text_report import write_text_report

        return write_text_report(run, sections, quiet=quiet)
    generator = torch.Generator().manual_seed(0)
    state: dict[str, Any] = {}

    def images() -> ImageSet:
        if "images" not in state:
            chosen = report_images(run, limit=_MAP_IMAGES)
            probe = to_float(chosen.images[:2].to(model.device))
            with torch.no_grad():  # an encoder that is an optimisation gets fewer images
                count = affordable_encodes(model, probe, _ENCODE_BUDGET_S)
            state["images"] = chosen.head(max(count, 2))
        return state["images"]

    def codes() -> torch.Tensor:
        """Codes of images(), encoded once (a GAN's encoder is an optimisation: costly)."""
        if "codes" not in state:
            with torch.no_grad():
                state["codes"] = batched(model.encode, images().images, model.device)
        return state["codes"]

    def losses() -> str:
        terms = loss_figure(run.metrics, folder / "losses.png")
        return sections.figure("losses.png", f"{', '.join(terms)} per epoch {_loss_units(model)}")

    def reconstructions() -> str:
        shown = images().images[:8]
        x = to_float(shown.to(model.device))
        with torch.no_grad():
            x_hat = model.reconstruct(x).cpu()
        save_grid(
            torch.cat([x.cpu(), x_hat]),
            folder / "reconstructions.png",
            nrow=len(shown),
            title=f"images 0-{len(shown) - 1} of {images().source} and their reconstructions",
            rows=["original", "reconstructed"],
        )
        return sections.figure(
            "reconstructions.png", f"top: {images().source} images; bottom: reconstructions"
        )

    def samples() -> str:
        save_grid(
            model.generate(64, generator=generator).cpu(),
            folder / "samples.png",
            nrow=8,
            title=f"{folder.name}: 64 images generated from the model's prior, seed 0",
        )
        return sections.figure("samples.png", "64 images decoded from the model's prior")

    def sample_quality() -> str:
        return _quality_section(run, quiet)

    def interpolation() -> str:
        pair = _distinct_pair(images())
        a, b = codes()[pair[0]], codes()[pair[1]]
        with torch.no_grad():
            rows = [
                model.decode(latent.interpolate(a, b, 10, mode).to(model.device))
                for mode in ("lerp", "slerp")
            ]
        save_grid(
            torch.cat(rows).cpu(),
            folder / "interpolation.png",
            nrow=10,
            title=f"from image {pair[0]} (left) to image {pair[1]} (right) of {images().source}, "
            "decoded codes; t = share of the way",
            rows=["linear", "spherical"],
            columns=[f"t={t:.2g}" for t in torch.linspace(0, 1, 10).tolist()],
        )
        return sections.figure(
            "interpolation.png",
            f"images {pair[0]} and {pair[1]} of {images().source}: linear (top) and spherical "
            "(bottom) interpolation between their codes, 10 steps, ends included",
        )

    def traversal() -> str:
        spread_order = codes().var(0).argsort(descending=True).tolist()
        dims = sorted(spread_order[:10])
        around = f"the code of {images().source} image 0"
        save_grid(
            traversal_images(model, codes()[0], dims, 3.0, 9),
            folder / "traversal.png",
            nrow=9,
            **traversal_labels(model, dims, 3.0, 9, around),
        )
        return sections.figure(
            "traversal.png",
            f"rows: latent dimensions {', '.join(map(str, dims))} (the {len(dims)} that vary "
            "most across images), each from -3 to +3 prior standard deviations around the code "
            f"of {images().source} image 0",
        )

    def latent_maps() -> str:
        captions = latent_map(
            run, codes(), images(), folder / "latent-map.png", folder / "latent-plane.png"
        )
        return sections.figure("latent-map.png", captions["scatter"]) + sections.figure(
            "latent-plane.png", captions["plane"]
        )

    def metrics() -> str:
        record, note = _evaluation(run, images())
        html = f'<p class="note">From {escape(note)}.</p>' + _metrics_table(record)
        if record.get("kl_per_dim") and record.get("posterior_mean_variance"):
            kl_figure(record, folder / "kl-per-dimension.png")
            threshold = record.get("active_unit_threshold", ACTIVE_UNIT_THRESHOLD)
            html += sections.figure(
                "kl-per-dimension.png",
                f"{record.get('active_units')} of {record.get('latent_dim')} latent units are "
                f"active: Cov_x E_q[z_u] > {threshold:g} (Burda et al. 2016), in blue above the "
                "dashed line; inactive ones in grey (top: the spread of each unit's posterior "
                "mean across the images, log scale; bottom: each unit's KL in nats, which an "
                "active unit can still have small). evaluate and the training diagnostics count "
                "the same way",
            )
        return html

    planned: list[tuple[str, Callable[[], str]]] = [
        ("Loss curves", losses),
        ("Training diagnostics", lambda: _diagnostics_html(folder, sections)),
        ("Reconstructions", reconstructions),
        ("Samples", samples),
        ("Sample quality", sample_quality),
        ("Interpolation", interpolation),
        ("Traversal", traversal),
        ("Latent map", latent_maps),
        ("Metrics", metrics),
        ("Configuration", lambda: _config_table(run)),
    ]
    shape = "x".join(map(str, run.image_shape))
    return _make_all(sections, planned, folder, quiet, run, f"images {shape}")


def _diagnostics_html(folder: Path, sections: _Sections) -> str:
    """The training diagnostics' warnings, epoch by epoch, and their figures."""
    from latentspace.diagnostics import diagnostics_figures, read_diagnostics

    figures = diagnostics_figures(folder, folder)
    if not figures:
        return '<p class="note">No diagnostics.jsonl: trained with --no-diagnostics.</p>'
    said = [(r["epoch"], w) for r in read_diagnostics(folder) for w in r["warnings"]]
    notes = "".join(f"<li>epoch {e}: {escape(w)}</li>" for e, w in said)
    body = f"<ul>{notes}</ul>" if said else '<p class="note">No warnings.</p>'
    return body + "".join(sections.figure(png.name, title) for title, png in figures)


def _loss_units(model: GenerativeModel) -> str:
    """What the loss curves measure, as the model declares it (never guessed from its family)."""
    if model.monitor is None:
        return (
            "(each player's own loss: they are not minimised together and do not say how good the "
            "images are; the FID under Sample quality does)"
        )
    if model.has_likelihood():
        return "(nats per image)"
    return f"(per image; early stopping watches validation {model.monitor})"


_QUICK_FID = 500  # samples (and held-out images) of the report's own FID when none was measured


def latest_quality(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest FID/KID of a run's metrics: a `quality` record or an evaluation's `--fid`."""
    for record in reversed(records):
        if record.get("kind") == "quality":
            return record
        if record.get("kind") == "evaluation" and isinstance(record.get("quality"), dict):
            return dict(record["quality"])
    return None


def _quality_section(run: Run, quiet: bool) -> str:
    """The latest measured FID/KID; for a model without a validation loss, whose samples are all
    there is to judge, a quick FID of a few samples when none was measured."""
    found = latest_quality(run.metrics)
    if found is not None:
        rows = [
            ("FID", f"{found['fid']:.3f}", f"{found['floor_fid']:.3f}"),
            (
                "KID x 10^3",
                f"{1e3 * found['kid_mean']:.3f} +- {1e3 * found['kid_std']:.3f}",
                f"{1e3 * found['floor_kid_mean']:.3f} +- {1e3 * found['floor_kid_std']:.3f}",
            ),
        ]
        if found.get("classes_covered") is not None and found.get("classes"):
            rows.append(
                ("classes covered", f"{found['classes_covered']}/{len(found['classes'])}", "")
            )
        note = (
            f"From the run's latest `latentspace quality` record: {found['n_generated']} generated "
            f"images against {found['n_reference']} of {found['reference']}, in "
            f"{found['features']} (not comparable with published Inception-FID). The floor is "
            "real training images against the same reference."
        )
        return f'<p class="note">{escape(note)}</p>' + table(rows, ["score", "samples", "floor"])
    if run.model.monitor is not None:
        return (
            '<p class="note">No FID measured yet: <code>latentspace quality RUN</code> measures '
            "FID/KID and class coverage of the run's samples.</p>"
        )
    from latentspace.analysis.quality import sample_fid

    def log(line: str) -> None:  # training the feature network once: say so on stderr
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    fid = sample_fid(run.model, run.config, n=_QUICK_FID, log=log)
    note = (
        f"A quick FID made for this report: {_QUICK_FID} samples against {_QUICK_FID} held-out "
        "images in latentspace's own classifier features, higher and noisier than the "
        "10,000-sample FID of `latentspace quality RUN` (run it for the full numbers)."
    )
    return f'<p class="note">{escape(note)}</p>' + table(
        [("FID", f"{fid:.2f}")], ["score", "value"]
    )


def _epochs(run: Run) -> int:
    return sum(1 for r in run.metrics if r.get("kind", "epoch") == "epoch")


def _distinct_pair(images: ImageSet) -> list[int]:
    """Indices of two images with different labels when labels exist (a more telling path)."""
    if len(images) < 2:
        raise LatentspaceError(f"{images.source} has fewer than 2 images to interpolate between")
    if images.labels is not None:
        first = int(images.labels[0])
        for i in range(1, len(images)):
            if int(images.labels[i]) != first:
                return [0, i]
    return [0, 1]
