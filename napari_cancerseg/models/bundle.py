"""Model bundles: one ``.keras`` file holding the model and everything needed to use it.

A bundle is a Keras 3 ``.keras`` archive (a zip) with two more members:
``cancerseg/bundle.json`` (architecture, preprocessing recipe, class table,
model card fields) and ``cancerseg/MODEL_CARD.md``.  Keras ignores them;
``bundle_info`` reads them with the standard library alone, so the napari
process can show a bundle's recipe and classes without importing Keras.
Loading uses Keras safe mode: a bundle can never run arbitrary code.
"""

from __future__ import annotations

import datetime
import json
import os
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import CancersegError

BUNDLE_MEMBER = "cancerseg/bundle.json"
CARD_MEMBER = "cancerseg/MODEL_CARD.md"
FORMAT = "napari-cancerseg model bundle"
FORMAT_VERSION = 1


class BundleError(CancersegError, ValueError):
    def __init__(self, path, problem: str):
        super().__init__(f"{os.fspath(path)}: {problem}")


@dataclass
class Recipe:
    """How tiles must be prepared for the model, and how it was trained to see them."""

    tile_size: int = 512
    overlap: int = 64
    mpp: float | None = 0.5  # µm per pixel of the input; None for non-slide images
    channels: int = 3
    input_dtype: str = "uint8"  # uint8: the model scales pixels itself
    stain: dict[str, Any] | None = None  # {"method": "macenko", "matrix": ..., "max_concentrations": ...}
    intensity: str = "uint8/255 inside the model"
    divisor: int = 16  # input sides must be multiples of this (2**depth)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BundleInfo:
    """A bundle's metadata (no Keras needed)."""

    path: str
    name: str
    version: str
    architecture: dict[str, Any]
    recipe: Recipe
    classes: list[dict[str, Any]]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> dict[int, str]:
        return {int(c["label"]): c["name"] for c in self.classes}


def bundle_info(path: str | os.PathLike) -> BundleInfo:
    """Read a bundle's metadata; a file that is not a bundle gets a clear error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BundleError(path, "no such model bundle file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if BUNDLE_MEMBER not in names:
                kind = "a plain Keras model without a recipe" if "config.json" in names else "a zip archive"
                raise BundleError(path, f"not a napari-cancerseg model bundle: it is {kind} (no {BUNDLE_MEMBER})")
            meta = json.loads(archive.read(BUNDLE_MEMBER))
    except zipfile.BadZipFile:
        raise BundleError(path, "not a model bundle: the file is not a .keras (zip) archive") from None
    except json.JSONDecodeError as err:
        raise BundleError(path, f"corrupt bundle metadata: {err}") from None
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(path, f"unsupported bundle format {meta.get('format')!r} v{meta.get('format_version')}")
    return BundleInfo(path=path, name=meta["name"], version=str(meta["version"]), architecture=meta["architecture"],
                      recipe=Recipe(**meta["recipe"]), classes=meta["classes"], card=meta.get("card", {}))


def model_card_markdown(info: BundleInfo) -> str:
    card = info.card
    lines = [f"# Model card: {info.name} {info.version}", "",
             "Research use only, not for diagnosis.", "",
             f"- Architecture: {info.architecture.get('builder')} {json.dumps(info.architecture.get('kwargs', {}))}",
             f"- Input: {info.recipe.tile_size} px tiles, {info.recipe.channels} channels, "
             f"{info.recipe.mpp if info.recipe.mpp else 'n/a'} µm/px, {info.recipe.intensity}",
             f"- Stain normalisation: {(info.recipe.stain or {}).get('method', 'none')}",
             "- Classes: " + ", ".join(f"{c['label']} {c['name']}" for c in info.classes),
             f"- Date: {card.get('date', '')}", ""]
    for key, title in (("training_data", "Training data"), ("split", "Split"), ("metrics", "Held-out metrics"),
                       ("training", "Training"), ("reproduce", "Reproduce"), ("notes", "Notes")):
        if key in card:
            value = card[key]
            body = value if isinstance(value, str) else "```json\n" + json.dumps(value, indent=2) + "\n```"
            lines += [f"## {title}", "", body, ""]
    return "\n".join(lines)


def save_bundle(model, path: str | os.PathLike, *, name: str, version: str, architecture: dict[str, Any],
                recipe: Recipe, classes: list[dict[str, Any]], card: dict[str, Any] | None = None) -> BundleInfo:
    """Write the model and its metadata into one ``.keras`` bundle, atomically (temp file + rename)."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise BundleError(path, "a bundle file name must end in .keras")
    card = dict(card or {})
    card.setdefault("date", datetime.date.today().isoformat())
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "version": version,
            "architecture": architecture, "recipe": recipe.to_dict(), "classes": classes, "card": card}
    tmp = f"{path}.tmp-{os.getpid()}.keras"
    # Keras 3 saves a compiled model's optimizer state (2x the weights for Adam) whatever
    # include_optimizer says: a rebuilt, uncompiled copy keeps the bundle to the weights alone.
    inference_model = model.__class__.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    inference_model.save(tmp)
    info = BundleInfo(path=path, name=name, version=version, architecture=architecture, recipe=recipe,
                      classes=classes, card=card)
    with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(BUNDLE_MEMBER, json.dumps(meta, indent=2, default=_json_default))
        archive.writestr(CARD_MEMBER, model_card_markdown(info))
    os.replace(tmp, path)
    return info


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def next_version(path: str | os.PathLike) -> tuple[str, str]:
    """(path, version) for the next version of a bundle, beside it: 1.2.0 -> ``<name>-v1.3.0.keras``.

    Never an existing file: the previous versions stay as they are.
    """
    info = bundle_info(path)
    parts = [int(p) if p.isdigit() else 0 for p in (info.version or "1.0.0").split(".")[:3]]
    parts += [0] * (3 - len(parts))
    folder = os.path.dirname(os.path.abspath(path))
    stem = os.path.basename(os.fspath(path)).rsplit(".keras", 1)[0].split("-v")[0]
    while True:
        parts = [parts[0], parts[1] + 1, 0]
        version = ".".join(map(str, parts))
        candidate = os.path.join(folder, f"{stem}-v{version}.keras")
        if not os.path.exists(candidate):
            return candidate, version


class Bundle:
    """A loaded bundle: the Keras model plus its recipe; ``predict_tile`` for one RGB tile."""

    def __init__(self, info: BundleInfo, model):
        self.info = info
        self.model = model

    @property
    def metadata(self) -> BundleInfo:
        return self.info

    @property
    def recipe(self) -> Recipe:
        return self.info.recipe

    def prepare(self, tile: np.ndarray) -> np.ndarray:
        """Stain normalisation (when the recipe has one) and the dtype the model takes."""
        tile = np.asarray(tile)
        if tile.ndim == 2:
            tile = tile[..., None]
        if tile.shape[-1] != self.recipe.channels:
            raise ValueError(f"the model takes {self.recipe.channels}-channel tiles, got shape {tile.shape}")
        stain = self.recipe.stain
        if stain and stain.get("method") == "macenko":
            from ..preprocess.stain import MacenkoStains, macenko_normalise

            reference = MacenkoStains(np.asarray(stain["matrix"]), np.asarray(stain["max_concentrations"]))
            tile = macenko_normalise(tile, reference).image
        return tile.astype(self.recipe.input_dtype, copy=False)

    def _prepare_batch(self, tiles) -> np.ndarray:
        if (isinstance(tiles, np.ndarray) and tiles.ndim == 4 and tiles.shape[-1] == self.recipe.channels
                and not self.recipe.stain):  # the tiled engine's batches: used as they are, not copied
            return tiles.astype(self.recipe.input_dtype, copy=False)
        return np.stack([self.prepare(t) for t in tiles])

    def predict_batch(self, tiles: np.ndarray, as_uint8: bool = False) -> np.ndarray:
        """Per-class probabilities (N, H, W, C) of a batch of equally sized tiles.

        ``as_uint8`` gives round(255 p) computed inside the model, so a GPU hands
        back a quarter of the bytes (the tiled engine stores uint8 anyway).
        """
        tiles = self._prepare_batch(tiles)
        height, width = tiles.shape[1:3]
        divisor = self.recipe.divisor
        pad_y, pad_x = (-height) % divisor, (-width) % divisor
        if pad_y or pad_x:  # reflect, so the border context looks like tissue, not black
            tiles = np.pad(tiles, ((0, 0), (0, pad_y), (0, pad_x), (0, 0)), mode="reflect")
        if as_uint8:
            return np.asarray(self._uint8_model.predict_on_batch(tiles))[:, :height, :width]
        probabilities = np.asarray(self.model.predict_on_batch(tiles), dtype=np.float32)[:, :height, :width]
        if probabilities.shape[-1] == 1:  # sigmoid head: background and foreground
            probabilities = np.concatenate([1.0 - probabilities, probabilities], axis=-1)
        return probabilities

    @cached_property
    def _uint8_model(self):
        import keras
        from keras import ops

        output = self.model.output
        if output.shape[-1] == 1:
            output = ops.concatenate([1.0 - output, output], axis=-1)
        quantised = ops.cast(ops.round(ops.clip(output, 0.0, 1.0) * 255.0), "uint8")
        return keras.Model(self.model.inputs, quantised, name=f"{self.model.name}_uint8")

    @property
    def is_classifier(self) -> bool:
        return "classifier" in str(self.info.architecture.get("builder", ""))

    def classify(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of a batch of equally sized tiles (image-level classifiers)."""
        return np.asarray(self.model.predict_on_batch(self._prepare_batch(tiles)), dtype=np.float32)

    def predict_tile(self, tile: np.ndarray) -> np.ndarray:
        """Per-class probabilities (H, W, C) of one tile (uint8 RGB for slides)."""
        return self.predict_batch(np.asarray(tile)[None])[0]


def load_bundle(path: str | os.PathLike) -> Bundle:
    import keras

    from . import losses, metrics  # noqa: F401 - registers the serialisable objects

    info = bundle_info(path)
    try:
        model = keras.saving.load_model(info.path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds; the user needs one message
        raise BundleError(path, f"the bundle's Keras model cannot be loaded: {type(err).__name__}: {err}") from None
    return Bundle(info, model)
