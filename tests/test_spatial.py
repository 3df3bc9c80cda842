"""The fully convolutional networks with spatial latents (models/spatial.py)."""

from __future__ import annotations

import pytest
import torch

from latentspace.errors import ConfigError, DataError
from latentspace.models.spatial import (
    SpatialDecoder,
    SpatialEncoder,
    code_size,
    crop_to,
    pad_to_multiple,
)


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_shapes_round_trip_at_every_factor(factor: int) -> None:
    torch.manual_seed(0)
    encoder = SpatialEncoder(3, 5, factor, 8)
    decoder = SpatialDecoder(5, 3, factor, 8)
    x = torch.rand(2, 3, 2 * factor, 3 * factor)  # height and width differ
    z = encoder(x)
    assert tuple(z.shape) == (2, 5, 2, 3)
    assert tuple(decoder(z).shape) == (2, 3, 2 * factor, 3 * factor)


def test_any_size_goes_through_with_padding_and_crop() -> None:
    torch.manual_seed(0)
    encoder, decoder = SpatialEncoder(1, 2, 8, 4), SpatialDecoder(2, 1, 8, 4)
    x = torch.rand(1, 1, 28, 21)
    padded, size = pad_to_multiple(x, 8)
    assert tuple(padded.shape) == (1, 1, 32, 24) and size == (28, 21)
    assert torch.equal(padded[..., :28, :21], x)  # the image itself is untouched
    assert torch.equal(padded[..., 31, :21], x[..., 27, :])  # edges replicated, not zeros
    z = encoder(padded)
    assert tuple(z.shape[-2:]) == code_size(28, 21, 8) == (4, 3)
    assert tuple(crop_to(decoder(z), size).shape) == (1, 1, 28, 21)


def test_a_size_already_divisible_is_not_padded() -> None:
    x = torch.rand(1, 3, 16, 32)
    padded, size = pad_to_multiple(x, 16)
    assert padded is x and size == (16, 32)


def test_an_image_is_coded_alone_whatever_its_batch() -> None:
    """No normalisation layer: one image's code does not depend on the others in its batch."""
    torch.manual_seed(0)
    encoder = SpatialEncoder(3, 4, 4, 8)
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(encoder(x)[1:2], encoder(x[1:2]), rtol=1e-5, atol=1e-6)


def test_the_code_map_is_local() -> None:
    """Changing the image's bottom-right corner leaves the top-left codes as they were."""
    torch.manual_seed(0)
    encoder = SpatialEncoder(1, 2, 4, 4, blocks=1)
    x = torch.rand(1, 1, 64, 64)
    y = x.clone()
    y[..., 48:, 48:] = 1 - y[..., 48:, 48:]
    zx, zy = encoder(x), encoder(y)
    assert torch.equal(zx[..., :4, :4], zy[..., :4, :4])
    assert not torch.equal(zx[..., -2:, -2:], zy[..., -2:, -2:])


def test_overfits_one_image() -> None:
    torch.manual_seed(0)
    encoder, decoder = SpatialEncoder(3, 8, 4, 16), SpatialDecoder(8, 3, 4, 16)
    x = torch.rand(1, 3, 16, 16)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(150):
        loss = (torch.sigmoid(decoder(encoder(x))) - x).pow(2).mean()
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.2 * losses[0]


def test_bad_factor_and_sizes_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="factor 6 is not one of: 4, 8, 16"):
        SpatialEncoder(3, 4, 6, 8)
    with pytest.raises(ConfigError, match="width = 0"):
        SpatialDecoder(4, 3, 8, 0)
    with pytest.raises(DataError, match=r"divisible by 8, got \(1, 3, 12, 16\)"):
        SpatialEncoder(3, 4, 8, 8)(torch.rand(1, 3, 12, 16))
    with pytest.raises(DataError, match="code maps"):
        SpatialDecoder(4, 3, 8, 8)(torch.rand(2, 4))
