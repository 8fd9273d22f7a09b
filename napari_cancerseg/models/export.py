"""A bundle's network as ONNX, for QuPath (DJL), MONAI and onnxruntime users.

The ONNX file is the Keras network itself: the bundle's input (for slides,
uint8 RGB tiles, NHWC, sides multiples of the recipe's divisor) and its raw
output (a sigmoid foreground map for one-class models, softmax per class
otherwise).  The bundle's metadata (recipe, classes, model card fields) goes
into the ONNX model's ``metadata_props`` under ``cancerseg``, so a user of the
file alone knows how to prepare tiles and read the output.  Keras exports
through tf2onnx on the TensorFlow backend (the ``onnx`` extra).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..errors import CancersegError
from .bundle import bundle_info, load_bundle

ONNX_METADATA_KEY = "cancerseg"


@dataclass(frozen=True)
class Exported:
    path: str
    max_difference: float  # onnxruntime against Keras on the check tile


def export_onnx(bundle: str, out: str, overwrite: bool = False, check_tile: np.ndarray | None = None) -> Exported:
    """Write ``bundle``'s network to ``out`` (.onnx) and check onnxruntime against Keras on one tile.

    ``check_tile``: an input tile of the bundle's kind (default: mid-grey at the recipe's tile size).
    An existing ``out`` is replaced only with ``overwrite``; the file appears whole or not at all.
    """
    try:
        import onnx
        import onnxruntime  # type: ignore[import-untyped]  # ships neither stubs nor py.typed
    except ImportError:
        raise CancersegError("ONNX export needs the onnx extra: pip install 'napari-cancerseg[onnx]'") from None
    if os.path.exists(out) and not overwrite:
        raise CancersegError(f"{out}: already exists; choose another path or pass --overwrite")
    if not out.endswith(".onnx"):
        raise CancersegError(f"{out}: an ONNX model's file name ends in .onnx")
    info = bundle_info(bundle)
    model = load_bundle(bundle).model
    recipe = info.recipe
    if check_tile is None:
        dtype = np.uint8 if recipe.input_dtype == "uint8" else np.float32
        check_tile = np.full((recipe.tile_size, recipe.tile_size, recipe.channels), 128, dtype)
    batch = np.asarray(check_tile)[None]
    expected = np.asarray(model(batch))  # also builds the model: Keras exports only a model that has been called
    temporary = f"{out}.{os.getpid()}.partial.onnx"
    try:
        model.export(temporary, format="onnx", verbose=False)
        exported = onnx.load(temporary)
        metadata = {"bundle": os.path.basename(bundle), "name": info.name, "version": info.version,
                    "recipe": recipe.to_dict(), "classes": info.classes, "input": "NHWC", "output": "NHWC"}
        entry = exported.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
        onnx.save(exported, temporary)
        session = onnxruntime.InferenceSession(temporary, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: batch})[0]
        difference = float(np.abs(np.asarray(got, np.float64) - expected).max())
        if not difference <= 1e-4:
            raise CancersegError(f"{bundle}: the ONNX export differs from Keras by {difference:.3g} on a tile")
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return Exported(out, difference)


def onnx_metadata(path: str) -> dict:
    """The bundle metadata stored in an exported ONNX file."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            return json.loads(entry.value)
    raise CancersegError(f"{path}: not exported by napari-cancerseg (no '{ONNX_METADATA_KEY}' metadata)")
