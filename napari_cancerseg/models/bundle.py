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
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import CancersegError

BUNDLE_MEMBER = "cancerseg/bundle.json"
CARD_MEMBER = "cancerseg/MODEL_CARD.md"
FORMAT = "napari-cancerseg model bundle"
FORMAT_VERSION = 1
#: Tiles are stitched, so no model needs bigger ones; a U-Net's activations on a 4096 px tile need tens of GB
#: and TensorFlow aborts the whole process (SIGABRT, no message) instead of raising.
MAX_TILE_SIZE = 2048
MIN_TILE_SIZE = 8
INPUT_DTYPES = ("uint8", "uint16", "float16", "float32")
STAIN_METHODS = ("macenko",)
#: Model outputs are probabilities; float32 rounding lets a softmax go this far past [0, 1].
PROBABILITY_TOLERANCE = 1e-3


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _recipe(path: str, data) -> Recipe:
    """The recipe, every field checked: a bad value here would crash TensorFlow or a worker much later."""
    if not isinstance(data, dict):
        raise BundleError(path, f"corrupt bundle metadata: 'recipe' is {type(data).__name__}, not an object")
    unknown = sorted(set(data) - set(Recipe.__dataclass_fields__))
    if unknown:
        raise BundleError(path, f"corrupt bundle metadata: unknown recipe field(s) {', '.join(unknown)}")
    recipe = Recipe(**data)
    problems = []
    if not _is_int(recipe.tile_size) or not MIN_TILE_SIZE <= recipe.tile_size <= MAX_TILE_SIZE:
        problems.append(f"tile_size {recipe.tile_size!r} is not a whole number of pixels from {MIN_TILE_SIZE} to "
                        f"{MAX_TILE_SIZE} (bigger tiles do not fit in memory; tiles are stitched anyway)")
    if not _is_int(recipe.overlap) or recipe.overlap < 0 or (
            _is_int(recipe.tile_size) and 2 * recipe.overlap >= recipe.tile_size):
        problems.append(f"overlap {recipe.overlap!r} is not a whole number of pixels from 0 to under half "
                        f"the tile size")
    if recipe.mpp is not None and (not _is_number(recipe.mpp) or not 0 < recipe.mpp <= 1000):
        problems.append(f"mpp {recipe.mpp!r} is not a positive number of µm per pixel (at most 1000) or null")
    if not _is_int(recipe.channels) or not 1 <= recipe.channels <= 16:
        problems.append(f"channels {recipe.channels!r} is not a whole number from 1 to 16")
    if recipe.input_dtype not in INPUT_DTYPES:
        problems.append(f"input_dtype {recipe.input_dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
    if not _is_int(recipe.divisor) or not 1 <= recipe.divisor <= MAX_TILE_SIZE:
        problems.append(f"divisor {recipe.divisor!r} is not a whole number from 1 to {MAX_TILE_SIZE} "
                        "(the input sides are padded to a multiple of it)")
    if not isinstance(recipe.intensity, str):
        problems.append(f"intensity {recipe.intensity!r} is not text")
    if recipe.stain is not None:
        problems += _stain_problems(recipe.stain)
    if problems:
        raise BundleError(path, "the bundle's recipe is invalid: " + "; ".join(problems))
    return recipe


def _stain_problems(stain) -> list[str]:
    if not isinstance(stain, dict):
        return [f"stain {str(stain)[:40]!r} is not an object"]
    if stain.get("method") not in STAIN_METHODS:
        return [f"stain method {stain.get('method')!r} is not one of {', '.join(STAIN_METHODS)}"]
    problems = []
    try:
        matrix = np.asarray(stain.get("matrix"), dtype=float)
        maxima = np.asarray(stain.get("max_concentrations"), dtype=float)
    except (TypeError, ValueError):
        return ["stain matrix and max_concentrations must be numbers"]
    if matrix.shape != (3, 2) or not np.isfinite(matrix).all():
        problems.append(f"stain matrix has shape {matrix.shape}; Macenko needs 3 x 2 finite numbers")
    if maxima.shape != (2,) or not np.isfinite(maxima).all() or not (maxima > 0).all():
        problems.append("stain max_concentrations must be two positive finite numbers")
    return problems


def _classes(path: str, data) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
        raise BundleError(path, "corrupt bundle metadata: 'classes' must be a list of {label, name} objects")
    labels = []
    for item in data:
        label, name = item.get("label"), item.get("name")
        if not _is_int(label) or not 0 <= label <= 255 or not isinstance(name, str):
            raise BundleError(path, f"corrupt bundle metadata: class {item!r} needs an integer label 0-255 and a "
                                    "name")
        labels.append(label)
    if len(set(labels)) != len(labels):
        raise BundleError(path, f"corrupt bundle metadata: class labels {labels} repeat")
    return data


def _info(path: str, meta) -> BundleInfo:
    """A BundleInfo from bundle.json, or a BundleError saying which field is wrong (never a KeyError)."""
    if not isinstance(meta, dict):
        raise BundleError(path, f"corrupt bundle metadata: {BUNDLE_MEMBER} holds {type(meta).__name__}, not an "
                                "object")
    version_number = meta.get("format_version", 0)
    if meta.get("format") != FORMAT or not _is_int(version_number) or version_number > FORMAT_VERSION:
        raise BundleError(path, f"unsupported bundle format {meta.get('format')!r} v{meta.get('format_version')}")
    missing = [key for key in ("name", "version", "architecture", "recipe", "classes") if key not in meta]
    if missing:
        raise BundleError(path, f"corrupt bundle metadata: missing {', '.join(missing)}")
    if not isinstance(meta["name"], str) or not isinstance(meta["version"], (str, int, float)):
        raise BundleError(path, "corrupt bundle metadata: name and version must be text")
    architecture, card = meta["architecture"], meta.get("card") or {}
    if not isinstance(architecture, dict) or not isinstance(architecture.get("kwargs", {}), dict):
        raise BundleError(path, "corrupt bundle metadata: 'architecture' must be an object with 'kwargs' an object")
    if not isinstance(card, dict):
        raise BundleError(path, "corrupt bundle metadata: 'card' must be an object")
    return BundleInfo(path=path, name=meta["name"], version=str(meta["version"]), architecture=architecture,
                      recipe=_recipe(path, meta["recipe"]), classes=_classes(path, meta["classes"]), card=card)


def bundle_info(path: str | os.PathLike) -> BundleInfo:
    """Read a bundle's metadata, every field checked; a file that is not a bundle gets a clear error."""
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(path, f"corrupt bundle metadata: {err}") from None
    except (OSError, EOFError, zlib.error) as err:  # a truncated or damaged archive member
        raise BundleError(path, f"the bundle archive is damaged: {err}") from None
    return _info(path, meta)


def _keras_config(path: str) -> dict:
    """The model's config.json (no Keras needed), or {} when unreadable (Keras will then say why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def _input_shape(config: dict) -> list | None:
    layers = (config.get("config") or {}).get("layers") or []
    for layer in layers:
        if isinstance(layer, dict) and layer.get("class_name") == "InputLayer":
            layer_config = layer.get("config") or {}
            shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
            return list(shape) if isinstance(shape, (list, tuple)) else None
    return None


def _output_layer_class(config: dict) -> str | None:
    inner = config.get("config") or {}
    outputs, layers = inner.get("output_layers"), inner.get("layers") or []
    if not outputs or not layers:
        return None
    name = outputs[0][0] if isinstance(outputs[0], list) else outputs[0]
    found = [layer.get("class_name") for layer in layers if isinstance(layer, dict) and layer.get("name") == name]
    return found[0] if found else None


def check_segmentation_bundle(info: BundleInfo, channels: int | None = None, tile: int | None = None) -> None:
    """Refuse, up front and without Keras, a bundle that cannot segment this slide.

    ``channels``: the slide's channels (3 for RGB); ``tile``: the tile side the run will use.  The model's
    own output (half-size maps, a class-count mismatch) is checked when it is loaded (``load_bundle``).
    """
    problems = []
    if tile is not None and not MIN_TILE_SIZE <= tile <= MAX_TILE_SIZE:
        problems.append(f"a {tile} px tile is outside {MIN_TILE_SIZE}-{MAX_TILE_SIZE} px (bigger tiles do not fit in "
                        "memory and abort TensorFlow; tiles are stitched anyway)")
    if "classifier" in str(info.architecture.get("builder", "")):
        problems.append(f"it is an image classifier ({info.architecture.get('builder')}), not a segmentation "
                        "model: it gives one class per tile, not a label per pixel")
    if channels is not None and channels != info.recipe.channels:
        problems.append(f"the model takes {info.recipe.channels}-channel tiles but the slide has {channels} "
                        "channel(s)")
    config = _keras_config(info.path)
    shape = _input_shape(config)
    if shape is not None and len(shape) == 4:
        if shape[-1] is not None and shape[-1] != info.recipe.channels:
            problems.append(f"the model's input has {shape[-1]} channels but its recipe says {info.recipe.channels}")
        side = tile or info.recipe.tile_size
        padded = side + (-side) % info.recipe.divisor
        if any(s is not None for s in shape[1:3]) and tuple(shape[1:3]) != (padded, padded):
            problems.append(f"the model takes only fixed {shape[1]} x {shape[2]} inputs, but tiles are "
                            f"{padded} x {padded}; a slide model must take any tile size")
    elif shape is not None and len(shape) != 4:
        problems.append(f"the model's input {shape} is not a batch of images (N, H, W, C)")
    head = _output_layer_class(config)
    if head in ("Dense", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten"):
        problems.append(f"the model ends in a {head} layer: a classifier head, not a per-pixel map")
    if problems:
        raise BundleError(info.path, "this bundle cannot segment the slide: " + "; ".join(problems))


def check_model_output(info: BundleInfo, model) -> None:
    """A segmentation model's output must be a full-size per-pixel map with one channel per class."""
    recipe = info.recipe
    side = recipe.tile_size + (-recipe.tile_size) % recipe.divisor
    try:
        output = tuple(model.compute_output_shape((1, side, side, recipe.channels)))
    except Exception as err:  # noqa: BLE001 - a model that cannot take the recipe's tiles at all
        raise BundleError(info.path, f"the model cannot take {side} x {side} x {recipe.channels} tiles: "
                                     f"{type(err).__name__}: {err}") from None
    if len(output) != 4:
        raise BundleError(info.path, f"the model gives {output} for a tile, not a per-pixel map: a classifier head "
                                     "cannot segment a slide")
    if tuple(output[1:3]) != (side, side):
        raise BundleError(info.path, f"the model gives a {output[1]} x {output[2]} map for a {side} x {side} tile; "
                                     "a slide model must give one value per input pixel")
    n_classes, channels = len(info.classes), output[3]
    if n_classes and channels != n_classes and not (channels == 1 and n_classes == 2):
        raise BundleError(info.path, f"the model gives {channels} output channel(s) but the bundle's class table "
                                     f"has {n_classes} classes")


def model_card_markdown(info: BundleInfo) -> str:
    card = info.card
    lines = [f"# Model card: {info.name} {info.version}", "",
             "Research use only, not for diagnosis.", "",
             f"- Architecture: {info.architecture.get('builder')} {json.dumps(info.architecture.get('kwargs', {}))}",
             (f"- Input: {info.recipe.tile_size} px tiles, {info.recipe.channels} channels, "
              f"{info.recipe.mpp if info.recipe.mpp else 'n/a'} µm/px, {info.recipe.intensity}"),
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


def _remove_stale_temporaries(path: str) -> None:
    """Remove ``PATH.tmp-PID.keras`` files that a killed run left (PID no longer alive): a save that never ended."""
    import glob

    for temporary in glob.glob(glob.escape(path) + ".tmp-*.keras"):
        pid = temporary[len(path) + len(".tmp-"):-len(".keras")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            os.remove(temporary)
        except PermissionError:  # alive, someone else's
            pass


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
    _remove_stale_temporaries(os.fspath(path))
    tmp = f"{path}.tmp-{os.getpid()}.keras"
    # Keras 3 saves a compiled model's optimizer state (2x the weights for Adam) whatever
    # include_optimizer says: a rebuilt, uncompiled copy keeps the bundle to the weights alone.
    inference_model = model.__class__.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    info = BundleInfo(path=path, name=name, version=version, architecture=architecture, recipe=recipe,
                      classes=classes, card=card)
    try:
        inference_model.save(tmp)
        with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(BUNDLE_MEMBER, json.dumps(meta, indent=2, default=_json_default))
            archive.writestr(CARD_MEMBER, model_card_markdown(info))
        os.replace(tmp, path)
    finally:  # a failed save (disk full...) leaves no half file; a killed one is removed by the next save
        if os.path.exists(tmp):
            os.remove(tmp)
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
    folder = os.path.dirname(os.path.abspath(path))
    stem = os.path.basename(os.fspath(path)).rsplit(".keras", 1)[0].split("-v")[0]
    version = info.version
    while True:
        version = next_minor_version(version)
        candidate = os.path.join(folder, f"{stem}-v{version}.keras")
        if not os.path.exists(candidate):
            return candidate, version


def next_minor_version(version: str | None) -> str:
    """1.0.0 -> 1.1.0, 1.2.5 -> 1.3.0; a part that is not a number counts as 0, no version as 1.0.0."""
    parts = [int(p) if p.isdigit() else 0 for p in (version or "1.0.0").split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return f"{parts[0]}.{parts[1] + 1}.0"


VERSION_IN_NAME = re.compile(r"-v(\d+(?:\.\d+){0,2})\.keras$")


def saved_version(out: str, requested: str, default: str, base_version: str | None = None) -> str:
    """The version a trained bundle records, so that it matches its file name.

    The file name's own version (``nuclei-v1.1.0.keras`` -> 1.1.0) comes first;
    else the version asked for; else, for a fine-tuned bundle (``base_version``)
    left at the ``default``, the next minor version of the bundle it continues.
    """
    named = VERSION_IN_NAME.search(os.path.basename(os.fspath(out)))
    if named:
        return named.group(1)
    if base_version is not None and requested == default:
        return next_minor_version(base_version)
    return requested


class Bundle:
    """A loaded bundle: the Keras model plus its recipe; ``predict_tile`` for one RGB tile."""

    #: Pixels one forward pass of ``predict_batch`` takes at most on PyTorch on the CPU (4 tiles of 512 px):
    #: a U-Net's activations scale with the pixels of a forward (the nuclei U-Net's peak RSS grows by about
    #: 500 MB per 512 px tile: 9.0 GB for 16 tiles, 3.0 GB for 4, 2.0 GB for 2), and a CPU gains no
    #: throughput from more tiles at once (fewer fresh pages to fault in: less system time).
    CPU_FORWARD_PIXELS = 4 * 512 * 512

    def __init__(self, info: BundleInfo, model, forward_tiles: int | None = None):
        self.info = info
        self.model = model
        #: Tiles per forward pass; None: the automatic rule (``tiles_per_forward``).
        self.forward_tiles = forward_tiles

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
            raise BundleError(self.info.path, f"the model takes {self.recipe.channels}-channel tiles, got shape "
                                              f"{tile.shape}")
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
            quantised, checks = self._forward(self._uint8_model, tiles)
            self._check_probabilities(checks)
            return quantised[:, :height, :width]
        probabilities, = self._forward(self.model, tiles)
        probabilities = probabilities.astype(np.float32, copy=False)[:, :height, :width]
        self._check_probabilities(np.array([[np.isfinite(probabilities).all(), probabilities.min(initial=0.0),
                                             probabilities.max(initial=0.0)]]))
        if probabilities.shape[-1] == 1:  # sigmoid head: background and foreground
            probabilities = np.concatenate([1.0 - probabilities, probabilities], axis=-1)
        return probabilities

    def tiles_per_forward(self, tiles: np.ndarray) -> int:
        """How many of these tiles one forward pass takes: ``forward_tiles`` when set, else on PyTorch on the CPU
        as many as ``CPU_FORWARD_PIXELS`` holds (at least one), else the whole batch.

        TensorFlow and JAX are left alone: they compile a graph per input shape and their CPU memory was not
        measured; a GPU runs a whole batch faster than its parts.
        """
        if self.forward_tiles is not None:
            return max(1, int(self.forward_tiles))
        if _torch_on_cpu(self.model):
            return max(1, self.CPU_FORWARD_PIXELS // max(1, tiles.shape[1] * tiles.shape[2]))
        return len(tiles)

    def _forward(self, model, tiles: np.ndarray) -> list[np.ndarray]:
        """``model.predict_on_batch`` of the tiles as numpy outputs, in forward passes of ``tiles_per_forward``
        tiles each, concatenated (the batch the user chose, what the engine reads and blends, stays as it is).

        The last, short slice is padded to the others' size (edge copies of its last tile, dropped after) unless the
        model runs eagerly (PyTorch): TensorFlow and JAX would compile a graph for its shape again.
        """
        size = min(self.tiles_per_forward(tiles), len(tiles))
        eager = not self.fixed_batch_shape
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(tiles), size):
            part = tiles[start:start + size]
            short = len(part)
            if short < size and not eager:
                part = np.concatenate([part, np.repeat(part[-1:], size - short, axis=0)])
            outputs = model.predict_on_batch(part)
            parts.append([np.asarray(o)[:short] for o in (outputs if isinstance(outputs, (list, tuple))
                                                          else [outputs])])
        return parts[0] if len(parts) == 1 else [np.concatenate(column) for column in zip(*parts)]

    def _check_probabilities(self, checks: np.ndarray) -> None:
        """Refuse NaN or out-of-range outputs: cast to labels they would become an all-background map."""
        checks = np.asarray(checks, dtype=np.float64).reshape(-1, 3)
        finite = bool(checks[:, 0].all()) and bool(np.isfinite(checks[:, 1:]).all())
        low, high = float(checks[:, 1].min(initial=0.0)), float(checks[:, 2].max(initial=0.0))
        if not finite:
            raise BundleError(self.info.path, "the model's output holds NaN or infinite values (broken weights?): "
                                              "nothing was written for this batch")
        if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
            raise BundleError(self.info.path, f"the model's output ranges from {low:.4g} to {high:.4g}, not "
                                              "probabilities in [0, 1] (a head without sigmoid or softmax?)")

    @cached_property
    def _uint8_model(self):
        import keras
        from keras import ops

        output = self.model.output
        # one row per tile, computed on the device: all finite, min, max (a few bytes, not the map)
        axes = tuple(range(1, len(output.shape)))
        checks = ops.stack([ops.cast(ops.all(ops.isfinite(output), axis=axes), "float32"),
                            ops.cast(ops.min(output, axis=axes), "float32"),
                            ops.cast(ops.max(output, axis=axes), "float32")], axis=-1)
        if output.shape[-1] == 1:
            output = ops.concatenate([1.0 - output, output], axis=-1)
        quantised = ops.cast(ops.round(ops.clip(output, 0.0, 1.0) * 255.0), "uint8")
        return keras.Model(self.model.inputs, [quantised, checks], name=f"{self.model.name}_uint8")

    @property
    def fixed_batch_shape(self) -> bool:
        """Whether the tiled engine hands this model full batches, a short last one padded: TensorFlow and JAX
        compile a graph per input shape (a short batch would be compiled again, seconds), PyTorch runs eagerly
        and would only compute the padding (a sixth of a 70-tile run's forward passes, batch 16)."""
        import keras

        return keras.backend.backend() != "torch"

    @property
    def is_classifier(self) -> bool:
        return "classifier" in str(self.info.architecture.get("builder", ""))

    def classify(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of a batch of equally sized tiles (image-level classifiers)."""
        return np.asarray(self.model.predict_on_batch(self._prepare_batch(tiles)), dtype=np.float32)

    def predict_tile(self, tile: np.ndarray) -> np.ndarray:
        """Per-class probabilities (H, W, C) of one tile (uint8 RGB for slides)."""
        return self.predict_batch(np.asarray(tile)[None])[0]


def _torch_on_cpu(model) -> bool:
    """Whether the model runs on the PyTorch backend with its weights on the CPU."""
    import keras

    if keras.backend.backend() != "torch":
        return False
    weights = getattr(model, "weights", None) or []
    device = getattr(getattr(weights[0], "value", None), "device", None) if weights else None
    return getattr(device, "type", "cpu") == "cpu"


def load_bundle(path: str | os.PathLike) -> Bundle:
    """The bundle's model (Keras safe mode); a segmentation bundle's output is checked to fit its recipe."""
    info = bundle_info(path)  # every metadata field checked before Keras is imported
    import keras

    from . import losses, metrics  # noqa: F401 - registers the serialisable objects

    try:
        model = keras.saving.load_model(info.path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds; the user needs one message
        raise BundleError(path, f"the bundle's Keras model cannot be loaded: {type(err).__name__}: {err}") from None
    if "classifier" not in str(info.architecture.get("builder", "")):
        check_model_output(info, model)
    return Bundle(info, model)
