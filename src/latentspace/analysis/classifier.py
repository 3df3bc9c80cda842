"""The feature networks behind latentspace's FID/KID, trained here because Inception weights cannot
be downloaded offline.

For a dataset with labels (MNIST, Fashion-MNIST, a folder with one sub-folder per class, an .npz
with labels) it is a small CNN classifier; its features are the 128 activations before the last
layer, and its predictions give the class distribution of generated samples (mode coverage).
For images without labels it is the encoder of a small convolutional autoencoder trained on those
images (features: the 64-number code); it gives no classes, so no coverage.

Each is trained once and cached in the data home:
`<data home>/classifiers/<key>.safetensors` (weights) and `<key>.json` (what it is, its test
accuracy or reconstruction error, the image shape). The key is the dataset name, or for a folder
or array its file name plus a hash of its pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from latentspace.data import ImageSet, data_home, named_dataset, resolve, to_float
from latentspace.errors import DataError
from latentspace.runs import atomic_write

__all__ = [
    "FeatureNetwork",
    "FeatureNetworkInfo",
    "cache_paths",
    "dataset_key",
    "feature_network",
    "train_feature_network",
]

FEATURES = 128  # classifier: width of the penultimate layer, the features FID/KID compare
CODE_FEATURES = 64  # unlabelled images: width of the autoencoder's code


@dataclasses.dataclass(frozen=True)
class FeatureNetworkInfo:
    """What a cached feature network is and how well it does (stored beside its weights)."""

    key: str
    dataset: str  # the name or path it was trained on
    kind: str  # classifier | autoencoder
    image_shape: tuple[int, int, int]
    classes: list[str] | None
    test_accuracy: float | None  # classifier: accuracy on held-out images
    test_mse: float | None  # autoencoder: mean squared pixel error on held-out images
    test_images: int
    train_images: int
    epochs: int
    seconds: float

    @property
    def label(self) -> str:
        """How scores computed with these features must be named."""
        if self.kind == "classifier":
            return f"latentspace {self.dataset} classifier features"
        return f"latentspace {self.dataset} autoencoder features"


class FeatureNetwork(nn.Module):
    """(B, C, H, W) images in [0, 1] (floats, or uint8 in [0, 255]) -> (B, num_features).

    The module torchmetrics' FID/KID take as `feature=`: `forward` returns features and
    `num_features` says how many. `logits` gives class scores (classifier kind only)."""

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int | None) -> None:
        super().__init__()
        c, _, _ = image_shape
        self.image_shape = tuple(image_shape)
        self.n_classes = n_classes
        self.num_features = FEATURES if n_classes else CODE_FEATURES
        # two conv blocks, then a fixed 4x4 grid: any image size gives the same feature width
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, self.num_features),
        )
        if n_classes:
            self.head: nn.Module = nn.Linear(FEATURES, n_classes)
        else:  # the decoder half of the autoencoder, only used while training
            self.head = nn.Sequential(
                nn.Linear(CODE_FEATURES, c * image_shape[1] * image_shape[2]),
                nn.Unflatten(1, image_shape),
            )

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = to_float(images)
        if tuple(images.shape[1:]) != self.image_shape:
            raise DataError(
                f"the feature network takes {self.image_shape} images, got {tuple(images.shape[1:])}"
            )
        return images.float() * 2.0 - 1.0  # centred inputs train faster

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.body(self._prepare(images))
        return F.relu(features) if self.n_classes else features

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if not self.n_classes:
            raise DataError("this feature network is an autoencoder's encoder: it has no classes")
        return self.head(self.forward(images))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.forward(images)))


def dataset_key(images: ImageSet) -> str:
    """The cache key: a dataset's name, else the file name plus a hash of the pixels."""
    name = named_dataset(images.source)
    if name is not None:
        return name
    digest = hashlib.sha256(images.images[:].numpy().tobytes()).hexdigest()[:12]
    stem = Path(images.source).stem or "images"
    return f"{stem}-{digest}"


def cache_paths(key: str) -> tuple[Path, Path]:
    directory = data_home() / "classifiers"
    return directory / f"{key}.safetensors", directory / f"{key}.json"


def _train_test(spec: str, images: ImageSet | None) -> tuple[ImageSet, ImageSet, str, str]:
    """(training images, held-out images, dataset name, cache key): a named dataset's train and
    test splits, else a seeded 90/10 split of the folder or array (`images`, if already loaded
    with a run's size and channels)."""
    name = named_dataset(spec)
    if name is not None:
        return resolve(f"{name}:train"), resolve(f"{name}:test"), name, name
    images = images if images is not None else resolve(spec)
    train, test = images.split(0.1, seed=0)
    if test is None:
        raise DataError(f"{spec} has {len(images)} image(s): too few to train a feature network")
    return train, test, spec, dataset_key(images)


def _class_names(train: ImageSet, test: ImageSet) -> list[str] | None:
    """The class names, or the label numbers as names (an array with labels but no names)."""
    if train.labels is None or test.labels is None:
        return None
    if train.classes:
        return list(train.classes)
    count = int(max(train.labels.max(), test.labels.max())) + 1
    return [str(i) for i in range(count)]


def train_feature_network(
    spec: str,
    *,
    images: ImageSet | None = None,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[FeatureNetwork, FeatureNetworkInfo]:
    """Train a feature network on `spec` (classifier if it has labels, else autoencoder), measure
    it on held-out images, and cache it. Adam, a cosine-decayed learning rate."""
    train, test, dataset, key = _train_test(spec, images)
    classes = _class_names(train, test)
    n_classes = len(classes) if classes else None
    torch.manual_seed(seed)
    network = FeatureNetwork(train.image_shape, n_classes)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    network.train()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        total, count = 0.0, 0
        for i in range(0, len(train), batch_size):
            index = order[i : i + batch_size]
            x = to_float(train.images[index])
            if n_classes:
                assert train.labels is not None
                loss = F.cross_entropy(network.logits(x), train.labels[index])
            else:
                loss = F.mse_loss(network.reconstruct(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
        log(f"feature network for {dataset}: epoch {epoch + 1}/{epochs}, loss {total / count:.4f}")
    network.eval()
    accuracy, mse = _measure(network, test)
    info = FeatureNetworkInfo(
        key=key,
        dataset=dataset,
        kind="classifier" if n_classes else "autoencoder",
        image_shape=train.image_shape,
        classes=classes,
        test_accuracy=accuracy,
        test_mse=mse,
        test_images=len(test),
        train_images=len(train),
        epochs=epochs,
        seconds=round(time.perf_counter() - start, 1),
    )
    _save(network, info)
    return network, info


@torch.no_grad()
def _measure(network: FeatureNetwork, test: ImageSet) -> tuple[float | None, float | None]:
    correct, squared, count = 0, 0.0, 0
    for i in range(0, len(test), 1000):
        x = to_float(test.images[i : i + 1000])
        if network.n_classes:
            assert test.labels is not None
            labels = test.labels[i : i + 1000]
            correct += int((network.logits(x).argmax(1) == labels).sum())
        else:
            squared += float((network.reconstruct(x) - x).pow(2).mean()) * len(x)
        count += len(x)
    if network.n_classes:
        return correct / count, None
    return None, squared / count


def _save(network: FeatureNetwork, info: FeatureNetworkInfo) -> None:
    weights, meta = cache_paths(info.key)
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    atomic_write(weights, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    text = json.dumps(dataclasses.asdict(info), indent=2) + "\n"
    atomic_write(meta, lambda tmp: tmp.write_text(text))


def _load(key: str) -> tuple[FeatureNetwork, FeatureNetworkInfo] | None:
    weights, meta = cache_paths(key)
    if not (weights.exists() and meta.exists()):
        return None
    try:
        raw: dict[str, Any] = json.loads(meta.read_text())
        raw["image_shape"] = tuple(raw["image_shape"])
        info = FeatureNetworkInfo(**raw)
        network = FeatureNetwork(
            info.image_shape,
            len(info.classes) if info.kind == "classifier" and info.classes else None,
        )
        network.load_state_dict(safetensors.torch.load_file(str(weights)))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise DataError(
            f"cached feature network {weights} cannot be read ({error}); delete it and its "
            "JSON to train it again"
        ) from None
    return network.eval(), info


def feature_network(
    spec: str,
    *,
    images: ImageSet | None = None,
    retrain: bool = False,
    log: Callable[[str], None] = print,
    **train_options: Any,
) -> tuple[FeatureNetwork, FeatureNetworkInfo]:
    """The cached feature network for `spec` (a dataset name, folder or array; `images` if already
    loaded), training and caching it first when it is missing (or when retrain=True)."""
    named = named_dataset(spec)
    name = named or spec
    if named is None and images is None:
        images = resolve(spec)
    key = named if named is not None else dataset_key(cast(ImageSet, images))
    if not retrain:
        cached = _load(key)
        if cached is not None:
            return cached
    log(f"training the feature network for {name} (once; cached in {cache_paths(key)[0].parent})")
    return train_feature_network(spec, images=images, log=log, **train_options)
