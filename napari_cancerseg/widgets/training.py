"""Fine-tune a bundle on the corrected regions in a background process, with a live plot and one-click swap.

Patches are cut here (OpenSlide and zarr only); the training runs in
``python -m napari_cancerseg.cli train --progress-json`` so TensorFlow never
enters napari.  The new bundle is saved as the next version beside the one it
continues (or under ~/.napari-cancerseg/models when that folder is read-only).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.utils.notifications import show_error, show_info

from .. import NUCLEI_MODEL, resource_path
from ..errors import CancersegError
from ..inference.options import cli_command
from ..io.stores import LabelStore
from ..models.bundle import next_version
from ..processes import Done, Error, Message, Progress, to_dict
from ..training.options import TrainOptions
from ..training.patches import extract_patches
from ._dock import ScrollableContainer, chosen_path
from ._heap import keep_long_lived_objects_frozen
from ._process import ProcessDock, ProcessRunner
from .correction import store_path
from .plot import LinePlot

USER_MODELS = Path.home() / ".napari-cancerseg" / "models"


def output_bundle(base: str) -> tuple[str, str]:
    """Where the next version of ``base`` goes: beside it, or in the user's folder if that is read-only."""
    path, version = next_version(base)
    if not os.access(os.path.dirname(path), os.W_OK):
        USER_MODELS.mkdir(parents=True, exist_ok=True)
        path = str(USER_MODELS / Path(path).name)
    return path, version


class TrainingWidget(ProcessDock, ScrollableContainer):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.store_layer = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="corrected store"))
        self.model = FileEdit(label="bundle to fine-tune", value=Path(resource_path(NUCLEI_MODEL)), filter="*.keras")
        self.size = SpinBox(label="patch px", value=256, min=64, max=2048, step=64)
        self.epochs = SpinBox(label="epochs", value=5, min=1, max=1000)
        self.steps = SpinBox(label="steps per epoch", value=20, min=1, max=10000)
        self.batch = SpinBox(label="batch", value=4, min=1, max=256)
        self.lr = FloatSpinBox(label="learning rate", value=1e-4, min=1e-6, max=1.0, step=1e-4)
        self.out = FileEdit(label="save as (empty: next version beside it)", mode=FileDialogMode.OPTIONAL_FILE,
                            filter="*.keras", value=None,
                            tooltip="a new .keras file; never an existing one: every earlier bundle stays as it is")
        self.train_button, self.cancel_button = PushButton(text="Train"), PushButton(text="Cancel", enabled=False)
        self.use_button = PushButton(text="Use new bundle in Predict slide", enabled=False)
        self.progress = ProgressBar(label="steps", value=0, min=0, max=1)
        self.status = Label(value="research use only, not for diagnosis")
        super().__init__(widgets=[self.store_layer, self.model, self.size, self.epochs, self.steps, self.batch, self.lr,
                                  self.out, self.train_button, self.cancel_button, self.progress, self.status,
                                  self.use_button])
        keep_long_lived_objects_frozen(viewer, self.native)  # no full collection walks napari's heap
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.plot = LinePlot()
        self.add_qt_widget(self.plot)
        self.train_button.changed.connect(self.train)
        self.use_button.changed.connect(self.use_new_bundle)
        # checkpoints are atomic and the old bundle is untouched: a cancelled run changes nothing
        self.runner = ProcessRunner(self, [self.train_button], self.status, self.cancel_button, self.progress,
                                    cancelled_text="cancelled; the previous bundle is unchanged")
        self.new_bundle: str | None = None
        self.events_seen: list[dict] = []

    def train(self, *_) -> None:
        path = store_path(self.store_layer.value)
        base = str(self.model.value)
        try:  # a store or bundle that cannot be read is said in one line, napari stays up, nothing is started
            if path is None or not LabelStore(path).corrections:
                show_error("pick a store with accepted corrections (Correct regions -> Accept)")
                return
            out, version = self._output(base)
            slide = LabelStore(path, writable=False).verified_slide()  # the slide this store was made from
        except CancersegError as err:
            show_error(str(err))
            self.status.value = f"not started: {err}"[:300]
            return
        dataset = f"{path.rstrip('/')}.patches.zarr"
        self.use_button.enabled = False
        self.plot.clear()
        self.events_seen = []
        self.status.value = "cutting patches from the corrected regions..."
        # read here: Qt widgets belong to this thread.  The version is the one the file name says (next_version)
        options = TrainOptions(out=out, version=version, init_bundle=base, size=self.size.value,
                               epochs=self.epochs.value, steps_per_epoch=self.steps.value,
                               batch_size=self.batch.value, learning_rate=self.lr.value, progress_json=True,
                               training_data=f"corrected regions of {slide} ({path})").validate()
        argv = cli_command("train", options=options, patches=dataset)
        self.runner.start(argv, "training", on_message=self._on_message, on_done=self._on_done,
                          prepare=lambda: self._cut_patches(slide, path, dataset, options.size))


    def _output(self, base: str) -> tuple[str, str]:
        """The chosen file (a new .keras, with the next version number inside), else the next version beside
        ``base``."""
        chosen = chosen_path(self.out)
        if not chosen:
            return output_bundle(base)
        if not chosen.endswith(".keras"):
            raise CancersegError(f"{chosen}: a bundle is saved as a .keras file")
        if os.path.exists(chosen):
            raise CancersegError(f"{chosen} exists: choose a new file (an earlier bundle is never replaced)")
        return chosen, next_version(base)[1]

    @staticmethod
    def _cut_patches(slide: str, store: str, dataset: str, size: int) -> Iterator[Message]:
        """Runs in the worker thread, before the training process (OpenSlide and zarr only, no TensorFlow)."""
        try:
            # the dock's own dataset beside the store, remade from the corrections as they are now
            summary = extract_patches(slide, dataset, size, store=store, overwrite=True)
        except CancersegError as err:
            yield Error(str(err))
            return
        yield Progress("patches", summary.patches, summary.patches,
                       {"patches": summary.patches, "categories": summary.categories})

    def _on_message(self, message: Message) -> None:
        self.events_seen.append(to_dict(message))
        if not isinstance(message, Progress):
            return
        data = message.data
        if message.stage == "patches":
            categories = ", ".join(f"{count:,} {name}" for name, count in (data.get("categories") or {}).items())
            self.status.value = (f"{data['patches']:,} patches" + (f" ({categories})" if categories else "")
                                 + "; training in the background...")
            self.progress.value = 0  # the bar counts training steps, not patches
        elif message.stage == "step":
            self.plot.add("loss", message.done, data["loss"])
            self.status.value = f"epoch {data['epoch']}/{data['epochs']}, step {data['step']}, loss {data['loss']:.4f}"
        elif message.stage == "epoch":
            validation = data.get("val_dice") is not None
            self.plot.add("validation Dice" if validation else "training Dice", message.done,
                          data.get("val_dice") if validation else data.get("dice"))

    def _on_done(self, message: Done) -> None:
        self.new_bundle = message.data["bundle"]
        self.use_button.enabled = True
        self.status.value = f"saved {Path(self.new_bundle).name} (version {message.data['version']})"
        show_info(self.status.value)

    def cancel(self, *_) -> None:
        self.runner.cancel()

    def use_new_bundle(self, *_) -> None:
        """One click: the Predict slide dock (opened if needed) now uses the new bundle."""
        if not self.new_bundle:
            return
        _, widget = self.viewer.window.add_plugin_dock_widget("napari-cancerseg", "Predict slide")
        widget.model.value = self.new_bundle
        self.status.value = f"Predict slide now uses {Path(self.new_bundle).name}"
