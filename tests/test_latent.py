"""Latent tools: interpolation, traversal, projection and neighbours, and their CLI commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentspace.analysis import latent
from latentspace.cli import main
from latentspace.imaging import image_grid


def test_lerp_endpoints_and_midpoint() -> None:
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 4.0, 2.0])
    path = latent.lerp(a, b, 5)
    assert path.shape == (5, 3)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path[2], (a + b) / 2)


def test_slerp_endpoints_norms_and_constant_angular_speed() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    b = b / b.norm() * a.norm()  # equal norms: slerp keeps it all the way
    path = latent.slerp(a, b, 9)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(9))
    assert float(latent.lerp(a, b, 9)[4].norm()) < float(a.norm()) - 1e-3  # lerp shrinks
    unit = path / path.norm(dim=1, keepdim=True)
    angles = torch.arccos((unit[:-1] * unit[1:]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(angles, angles[0].expand(8), atol=1e-4, rtol=0)


def test_slerp_interpolates_norms_linearly_and_handles_parallel_codes() -> None:
    a, c = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    norms = latent.slerp(a, c, 5).norm(dim=1)
    torch.testing.assert_close(norms, torch.linspace(3.0, 1.0, 5))
    parallel = latent.slerp(a, 2 * a, 3)
    torch.testing.assert_close(parallel, latent.lerp(a, 2 * a, 3))
    with pytest.raises(ValueError, match="steps"):
        latent.slerp(a, c, 1)


def test_traversal_grid_varies_one_dimension_per_row() -> None:
    z = torch.arange(5.0)
    values = torch.linspace(-3, 3, 7).expand(2, 7)
    codes = latent.traversal_grid(z, [1, 4], values)
    assert codes.shape == (2, 7, 5)
    torch.testing.assert_close(codes[0, :, 1], values[0])
    torch.testing.assert_close(codes[1, :, 4], values[1])
    untouched = codes[0][:, [0, 2, 3, 4]]
    torch.testing.assert_close(untouched, z[[0, 2, 3, 4]].expand(7, 4))


def test_pca_plane_and_neighbours() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 6, generator=g) * torch.tensor([5.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    projected, directions, mean = latent.pca(codes)
    assert projected.shape == (200, 2) and directions.shape == (2, 6)
    torch.testing.assert_close(directions @ directions.T, torch.eye(2), atol=1e-5, rtol=0)
    assert float(directions[0, 0].abs()) > 0.99 and float(directions[1, 1].abs()) > 0.99
    plane = latent.plane_codes(mean, directions, torch.tensor([-1.0, 1.0]), torch.tensor([2.0]))
    torch.testing.assert_close(plane[1] - plane[0], 2 * directions[0])
    distances, indices = latent.nearest_neighbours(codes[:3], codes, 4)
    assert indices[:, 0].tolist() == [0, 1, 2] and torch.all(distances[:, 0] == 0)
    brute = (codes[:3, None] - codes[None]).norm(dim=2).sort(dim=1).values[:, :4]
    torch.testing.assert_close(distances, brute, atol=1e-4, rtol=0)


def test_cli_interpolate_traverse_map_neighbours(tiny_run: Path, tiny_npz: Path) -> None:
    out = tiny_run.parent
    data = str(tiny_npz)
    assert main(["interpolate", str(tiny_run), "--from", f"{data}:0", "--to", f"{data}:5",
                 "--steps", "6", "--mode", "slerp", "--out", str(out / "i.png")]) == 0  # fmt: skip
    with Image.open(out / "i.png") as strip:  # 8 images in one row: A, 6 steps, B (+ labels)
        assert strip.width >= image_grid(torch.zeros(8, 1, 12, 12), 8).width
    assert main(["traverse", str(tiny_run), "--input", f"{data}:3", "--steps", "5",
                 "--out", str(out / "t.png")]) == 0  # fmt: skip
    with Image.open(out / "t.png") as grid:  # 2 rows (latent_dim 2) of 5 (+ labels)
        bare = image_grid(torch.zeros(10, 1, 12, 12), 5)
        assert grid.width >= bare.width and grid.height < 2 * bare.height
    assert main(["map", str(tiny_run), "--dataset", data, "--method", "tsne", "--grid", "4",
                 "--out", str(out / "m.png")]) == 0  # fmt: skip
    assert (out / "m.png").exists() and (out / "m-plane.png").exists()
    assert main(["neighbours", str(tiny_run), f"{data}:7", "-k", "3",
                 "--out", str(out / "n.png")]) == 0  # fmt: skip


def test_bad_inputs_give_one_line_errors(
    tiny_run: Path, tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    small = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(small)
    cases = {
        f"{tiny_npz}:64": "out of range",
        str(broken): "cannot read image",
        str(tmp_path / "missing.png"): "neither an image file",
    }
    for spec, expected in cases.items():
        argv = ["interpolate", str(tiny_run), "--from", spec, "--to", str(small)]
        assert main([*argv, "--out", str(tmp_path / "x.png")]) == 1
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and expected in error, error
    assert main(["traverse", str(tiny_run), "--dims", "0,9", "--out", str(tmp_path / "t.png")]) == 1
    assert "between 0 and 1" in capsys.readouterr().err


def test_a_slow_encoder_asks_for_a_limit_instead_of_running_for_hours(
    tiny_run: Path,
    tiny_npz: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import time

    from latentspace.commands import look
    from latentspace.models.vae import VAE

    encode = VAE.encode

    def slow(self: VAE, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        time.sleep(0.05)  # stands in for an optimisation such as GAN inversion
        return encode(self, x)

    monkeypatch.setattr(VAE, "encode", slow)
    monkeypatch.setattr(look, "_ENCODE_BUDGET_S", 0.01)
    argv = ["map", str(tiny_run), "--dataset", str(tiny_npz), "--out", "m.png"]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--limit 2 or fewer" in error
