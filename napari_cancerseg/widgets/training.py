"""Fine-tune a bundle on the corrected regions in a background process, with a live plot and one-click swap.

Patches are cut here (OpenSlide and zarr only); the training runs in
``python -m napari_cancerseg.cli train --progress-json`` so TensorFlow never
enters napari.  The new bundle is saved as the next version beside the one it
continues (or under ~/.napari-cancerseg/models when that folder is read-only).
"""

import os
from pathlib import Path

import napari
from magicgui.widgets import Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox, create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from .. import NUCLEI_MODEL, processes, resource_path
from ..errors import CancersegError
from ..inference.options import cli_command
from ..io.stores import LabelStore
from ..models.bundle import next_version
from ..training.options import TrainOptions
from ..training.patches import extract_patches
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


class TrainingWidget(Container):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.store_layer = create_widget(annotation=napari.layers.Labels, label="corrected store")
        self.model = FileEdit(label="bundle to fine-tune", value=resource_path(NUCLEI_MODEL), filter="*.keras")
        self.size = SpinBox(label="patch px", value=256, min=64, max=2048, step=64)
        self.epochs = SpinBox(label="epochs", value=5, min=1, max=1000)
        self.steps = SpinBox(label="steps per epoch", value=20, min=1, max=10000)
        self.batch = SpinBox(label="batch", value=4, min=1, max=256)
        self.lr = FloatSpinBox(label="learning rate", value=1e-4, min=1e-6, max=1.0, step=1e-4)
        self.train_button, self.cancel_button = PushButton(text="Train"), PushButton(text="Cancel", enabled=False)
        self.use_button = PushButton(text="Use new bundle in Predict slide", enabled=False)
        self.progress = ProgressBar(label="steps", value=0, min=0, max=1)
        self.status = Label(value="research use only, not for diagnosis")
        super().__init__(widgets=[self.store_layer, self.model, self.size, self.epochs, self.steps, self.batch, self.lr,
                                  self.train_button, self.cancel_button, self.progress, self.status, self.use_button])
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.plot = LinePlot()
        self.native.layout().addWidget(self.plot)
        self.train_button.changed.connect(self.train)
        self.cancel_button.changed.connect(self.cancel)
        self.use_button.changed.connect(self.use_new_bundle)
        self.process = self.worker = None
        self.new_bundle: str | None = None
        self.events_seen: list[dict] = []

    def train(self, *_) -> None:
        path = store_path(self.store_layer.value)
        if path is None or not LabelStore(path).corrections:
            show_error("pick a store with accepted corrections (Correct regions -> Accept)")
            return
        base = str(self.model.value)
        out, version = output_bundle(base)
        dataset = f"{path.rstrip('/')}.patches.zarr"
        self.train_button.enabled, self.cancel_button.enabled, self.use_button.enabled = False, True, False
        self.plot.clear()
        self.events_seen = []
        self.status.value = "cutting patches from the corrected regions..."
        # read here: Qt widgets belong to this thread.  The version is the one the file name says (next_version)
        options = TrainOptions(out=out, version=version, init_bundle=base, size=self.size.value,
                               epochs=self.epochs.value, steps_per_epoch=self.steps.value,
                               batch_size=self.batch.value, learning_rate=self.lr.value, progress_json=True)
        self.worker = self._run(path, dataset, options.validate())
        self.worker.yielded.connect(self._on_message)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    @thread_worker
    def _run(self, store: str, dataset: str, options: TrainOptions):
        try:
            slide = LabelStore(store, writable=False).verified_slide()  # the slide this store was made from
            # the dock's own dataset beside the store, remade from the corrections as they are now
            summary = extract_patches(slide, dataset, options.size, store=store, overwrite=True)
        except CancersegError as err:
            yield {"event": "error", "message": str(err)}
            return
        yield {"event": "patches", "patches": summary.patches, "categories": summary.categories}
        options = options.replace(training_data=f"corrected regions of {slide} ({store})")
        argv = cli_command("train", options=options, patches=dataset)
        self.process = processes.start(argv)
        yield from processes.messages(self.process)

    def _on_message(self, message: dict) -> None:
        self.events_seen.append(message)
        event = message.get("event")
        if event == "patches":
            self.status.value = f"{message['patches']} patches {message['categories']}; training in the background..."
        elif event == "step":
            total = message["epochs"] * message["steps"]
            done = (message["epoch"] - 1) * message["steps"] + message["step"]
            self.progress.max, self.progress.value = total, done
            self.plot.add("loss", done, message["loss"])
            self.status.value = f"epoch {message['epoch']}/{message['epochs']}, step {message['step']}, loss {message['loss']:.4f}"
        elif event == "epoch":
            done = message["epoch"] * self.steps.value
            self.plot.add("validation Dice" if message.get("val_dice") is not None else "training Dice", done,
                          message.get("val_dice") if message.get("val_dice") is not None else message.get("dice"))
        elif event == "done":
            self.new_bundle = message["bundle"]
            self.use_button.enabled = True
            self.status.value = f"saved {Path(self.new_bundle).name} (version {message['version']})"
            show_info(self.status.value)
        elif event == "error":
            show_error(message["message"][-500:])
            self.status.value = "failed: " + message["message"][-300:]

    def cancel(self, *_) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # checkpoints are atomic and the old bundle is untouched
            self.status.value = "cancelled; the previous bundle is unchanged"

    def _finished(self) -> None:
        self.train_button.enabled, self.cancel_button.enabled = True, False
        self.process = self.worker = None

    def use_new_bundle(self, *_) -> None:
        """One click: the Predict slide dock (opened if needed) now uses the new bundle."""
        if not self.new_bundle:
            return
        _, widget = self.viewer.window.add_plugin_dock_widget("napari-cancerseg", "Predict slide")
        widget.model.value = self.new_bundle
        self.status.value = f"Predict slide now uses {Path(self.new_bundle).name}"
