"""Train a segmentation model on image/mask pairs and save it as a bundle with its model card."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from .. import processes
from ..preprocess.augment import Augmenter
from .data import Pair, RandomPatches, WholeImages
from .options import TrainOptions, default_class_names

# the settings and their defaults live in options.py (the CLI's options are generated from them)
TrainConfig = TrainOptions


def build_model(config: TrainConfig, input_shape):
    from ..models.sk_unet import build_sk_unet
    from ..models.unet import build_unet

    kwargs = dict(input_shape=input_shape, filters=config.filters, dropout=config.dropout,
                  n_classes=config.n_classes, activation="sigmoid" if config.n_classes == 1 else "softmax",
                  input_dtype="uint8" if config.channels == 3 else "float32")
    builders: dict[str, Callable[..., Any]] = {"unet": build_unet, "sk_unet": build_sk_unet}
    builder = builders[config.architecture]
    return builder(**kwargs), {"builder": config.architecture,
                               "kwargs": {k: v for k, v in kwargs.items() if k != "input_shape"}}


def _keras_callbacks():
    import keras

    class AtomicCheckpoint(keras.callbacks.Callback):
        """Best weights so far, written to a temporary file and renamed: a killed run never leaves half a file."""

        def __init__(self, path: str, monitor: str):
            super().__init__()
            self.path, self.monitor, self.best = path, monitor, -np.inf

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is not None and value > self.best:
                self.best = value
                tmp = f"{self.path[:-len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5"
                self.model.save_weights(tmp)
                os.replace(tmp, self.path)

    class JsonProgress(keras.callbacks.Callback):
        """Progress messages (stage "step", then "epoch") on stdout for a parent process to follow (processes.py)."""

        def __init__(self, epochs: int, steps: int):
            super().__init__()
            self.epochs, self.steps, self.epoch = epochs, steps, 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            done = self.epoch * self.steps + batch + 1  # steps over the whole run: one progress bar
            processes.emit(processes.Progress("step", done, self.epochs * self.steps, {
                "epoch": self.epoch + 1, "epochs": self.epochs, "step": batch + 1, "steps": self.steps,
                "loss": float(logs.get("loss", np.nan))}))

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            processes.emit(processes.Progress("epoch", (epoch + 1) * self.steps, self.epochs * self.steps, {
                "epoch": epoch + 1, "epochs": self.epochs, "loss": logs.get("loss"), "dice": logs.get("dice"),
                "val_dice": logs.get("val_dice")}))

    return AtomicCheckpoint, JsonProgress


def predict_image(model, image: np.ndarray, divisor: int) -> np.ndarray:
    """Whole-image probabilities (H, W, C) with reflect padding to the network's divisor."""
    height, width = image.shape[:2]
    pad = ((0, (-height) % divisor), (0, (-width) % divisor), (0, 0))
    batch = np.pad(image, pad, mode="reflect")[None]
    return np.asarray(model.predict_on_batch(batch), np.float32)[0, :height, :width]


def labels_from_probabilities(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] > threshold).astype(np.uint8)
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def evaluate(model, pairs: list[Pair], divisor: int) -> list[dict[str, Any]]:
    """Per-image Dice and IoU of the foreground (binary) or of each class."""
    from ..models import metrics

    results = []
    for pair in pairs:
        predicted = labels_from_probabilities(predict_image(model, pair.image, divisor))
        entry = {"image": pair.name, "case": pair.case, "dice": metrics.dice(predicted > 0, pair.mask > 0),
                 "iou": metrics.iou(predicted > 0, pair.mask > 0)}
        if model.output_shape[-1] > 1:
            entry["per_class"] = metrics.per_label_scores(predicted, pair.mask, range(1, model.output_shape[-1]))
        results.append(entry)
    return results


def _version(config: TrainConfig, base_version: str | None) -> str:
    """The version the bundle records: its file name's, else the one asked for, else the base's next minor."""
    from ..models.bundle import saved_version

    return saved_version(config.out, config.version, TrainOptions.version, base_version)


def train(config: TrainConfig, train_pairs: list[Pair], val_pairs: list[Pair], test_pairs: list[Pair],
          callbacks: list | None = None):
    """Fit with early stopping on the validation images, score the untouched test images, save a bundle.

    Validation (for early stopping and checkpoints) and test (for the model
    card) are different images: nothing is tuned on the numbers reported.
    """
    import keras

    from ..models import losses
    from ..models.bundle import Recipe, save_bundle
    from ..models.metrics import DicePerImage

    keras.utils.set_random_seed(config.seed)
    if config.init_bundle:
        from ..models.bundle import load_bundle

        base = load_bundle(config.init_bundle)
        model, architecture, divisor = base.model, base.info.architecture, base.recipe.divisor
        config.version = _version(config, base.info.version)
        config.n_classes = int(model.output_shape[-1])  # the targets must match the head being fine-tuned
    else:
        model, architecture = build_model(config, (None, None, config.channels))
        divisor = 2 ** (len(config.filters) - 1)
        config.version = _version(config, None)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=losses.LOSSES[config.loss],
                  metrics=[DicePerImage(name="dice")])
    out_dir = os.path.dirname(os.path.abspath(config.out))
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.abspath(config.out))[0]
    checkpoint = f"{stem}.checkpoint.weights.h5"
    log_path = f"{stem}.training.csv"
    train_data = RandomPatches(train_pairs, config.size, config.batch_size, config.steps_per_epoch,
                               config.n_classes, Augmenter() if config.augment else None, config.seed,
                               workers=min(8, os.cpu_count() or 1))
    monitor = "val_dice" if val_pairs else "dice"
    atomic_checkpoint, json_progress = _keras_callbacks()
    fit_callbacks = [
        atomic_checkpoint(checkpoint, monitor),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.CSVLogger(log_path),
        *([json_progress(config.epochs, config.steps_per_epoch)] if config.progress_json else []),
        *(callbacks or []),
    ]
    start = time.time()
    history = model.fit(train_data, epochs=config.epochs,
                        validation_data=WholeImages(val_pairs, config.n_classes, divisor) if val_pairs else None,
                        callbacks=fit_callbacks, verbose=0 if config.progress_json else 2)
    seconds = time.time() - start
    if os.path.exists(checkpoint):
        model.load_weights(checkpoint)
    test_scores = evaluate(model, test_pairs, divisor) if test_pairs else []
    val_scores = evaluate(model, val_pairs, divisor) if val_pairs else []
    dice_values = [s["dice"] for s in test_scores]
    card = {
        "training_data": config.training_data,
        "split": {"train": sorted({p.name for p in train_pairs}),
                  "validation (early stopping)": sorted({p.name for p in val_pairs}),
                  "test (held out, reported)": sorted({p.name for p in test_pairs})},
        "metrics": {"test_per_image": test_scores, "validation_per_image": val_scores,
                    "test_dice_mean": float(np.mean(dice_values)) if dice_values else None,
                    "test_dice_min": float(np.min(dice_values)) if dice_values else None},
        "training": {"epochs_run": len(history.history.get("loss", [])), "seconds": round(seconds, 1),
                     "backend": keras.backend.backend(),
                     "config": {k: v for k, v in asdict(config).items() if k != "extra_card"}},
        "reproduce": config.reproduce,
        "notes": config.notes,
        **config.extra_card,
    }
    # None only before TrainOptions.__post_init__ fills it in, as here
    class_names = config.class_names if config.class_names is not None else default_class_names(config.n_classes)
    classes = [{"label": i, "name": n} for i, n in enumerate(class_names)]
    if config.init_bundle:  # same classes and recipe as the bundle it continues; the card says where it came from
        classes, recipe = base.info.classes, base.recipe
        card["fine_tuned_from"] = {"bundle": os.path.abspath(config.init_bundle), "name": base.info.name,
                                   "version": base.info.version}
    else:
        recipe = Recipe(tile_size=config.size, overlap=config.size // 8, mpp=config.mpp, channels=config.channels,
                        input_dtype="uint8" if config.channels == 3 else "float32",
                        intensity=("uint8/255 inside the model" if config.channels == 3
                                   else "per-volume percentile [0, 1]"),
                        divisor=divisor)
    info = save_bundle(model, config.out, name=config.name, version=config.version, architecture=architecture,
                       recipe=recipe, classes=classes, card=card)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    processes.emit(processes.Done(f"saved {config.out} (version {config.version})", {
        "bundle": config.out, "version": config.version, "test_dice_mean": card["metrics"]["test_dice_mean"],
        "test_per_image": [(s["image"], round(s["dice"], 4)) for s in test_scores]}))
    return info, history
