"""Training EfficientNetB0 classifiers: Gleason patches, and image-level tasks (organ, tumour, breast pathology).

Gleason: a patch's class is the graded label (benign or a pattern) covering
most of its mask; patches with only glass, unlabelled or ungraded tumour are
left out.  Image-level tasks read one folder per class (``ROOT/brain/...``,
``ROOT/breast/...``: PNG/JPEG or DICOM), each image squeezed to the model's
size.  Classes are weighted by inverse frequency (pattern 5 is rare), cases
are slides or patients, and the model card reports per-class
precision/recall/F1 and the quadratic weighted kappa on the held-out cases.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import processes
from ..classes import BENIGN, GLEASON_3, GLEASON_4, GLEASON_5
from .data import Pair, PyDatasetBase

CLASS_OF_LABEL = {BENIGN: 0, GLEASON_3: 1, GLEASON_4: 2, GLEASON_5: 3}
CLASS_NAMES = ("benign", "Gleason pattern 3", "Gleason pattern 4", "Gleason pattern 5")


@dataclass
class Example:
    name: str
    case: str
    image: np.ndarray
    label: int


def patch_class(mask: np.ndarray) -> int | None:
    """The classifier class of a patch: the graded label with most pixels (a tie goes to the higher pattern)."""
    counts = {cls: int((mask == label).sum()) for label, cls in CLASS_OF_LABEL.items()}
    best = max(counts, key=lambda c: (counts[c], c))
    return best if counts[best] else None


def examples_from_pairs(pairs: list[Pair]) -> list[Example]:
    found = []
    for pair in pairs:
        label = patch_class(pair.mask)
        if label is not None:
            found.append(Example(pair.name, pair.case, pair.image, label))
    return found


def examples_from_class_folders(root: str, size: int,
                                case_pattern: str | None = None) -> tuple[list[Example], tuple[str, ...]]:
    """One example per image file under ``root/<class>/``; classes in folder-name order."""
    import re

    from ..errors import CancersegError
    from ..inference.images import classifier_input
    from ..io.opening import read_any_image

    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise CancersegError(f"{root}: needs one folder per class (at least two), e.g. brain/ and breast/")
    pattern = re.compile(case_pattern) if case_pattern else None
    examples = []
    for label, folder in enumerate(folders):
        for path in sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")):
            match = pattern.search(path.stem) if pattern else None
            case = (match.group(1) if match and match.groups() else match.group(0)) if match else path.stem
            image = classifier_input(read_any_image(str(path)), size)
            examples.append(Example(path.stem, case, image, label))
    return examples, tuple(f.name for f in folders)


def class_weights(labels: list[int], n_classes: int = len(CLASS_NAMES)) -> dict[int, float]:
    """Inverse frequency, normalised so that a balanced set weighs 1 per class; absent classes weigh 0."""
    counts = np.bincount(labels, minlength=n_classes)
    present = counts > 0
    return {k: float(len(labels) / (present.sum() * counts[k])) if counts[k] else 0.0 for k in range(n_classes)}


class ClassifierPatches(PyDatasetBase):
    """Random examples with flips and quarter turns (histology has no up), new every epoch."""

    def __init__(self, examples: list[Example], batch_size: int, steps: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.examples, self.batch_size, self.steps = examples, batch_size, steps
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        chosen = self.rng.integers(0, len(self.examples), self.batch_size)
        images = []
        for i in chosen:
            image = np.rot90(self.examples[i].image, int(self.rng.integers(4)))
            images.append(image[:, ::-1] if self.rng.random() < 0.5 else image)
        return np.stack(images).astype(np.uint8), np.array([self.examples[i].label for i in chosen])


def evaluate_classifier(model, examples: list[Example], names: tuple[str, ...] = CLASS_NAMES) -> dict:
    from ..models.metrics import per_class_metrics, quadratic_weighted_kappa

    if not examples:
        return {}
    probabilities = np.concatenate([np.asarray(model.predict_on_batch(np.stack([e.image for e in examples[i:i + 32]])))
                                    for i in range(0, len(examples), 32)])
    predicted, truth = probabilities.argmax(axis=1), [e.label for e in examples]
    return {"n": len(examples), "accuracy": float(np.mean(predicted == np.asarray(truth))),
            "quadratic_weighted_kappa": quadratic_weighted_kappa(predicted, truth, len(names)),
            "per_class": per_class_metrics(predicted, truth, names)}


def train_classifier(config, train: list[Example], val: list[Example], test: list[Example],
                     names: tuple[str, ...] = CLASS_NAMES, task: str = "gleason"):
    """Fit the EfficientNetB0 classifier (or fine-tune ``config.init_bundle``); save a bundle with its card."""
    import keras

    from ..models.bundle import Recipe, load_bundle, save_bundle
    from ..models.classifier import build_classifier
    from .trainer import _keras_callbacks, _version

    keras.utils.set_random_seed(config.seed)
    size = train[0].image.shape[0]
    if config.init_bundle:
        base = load_bundle(config.init_bundle)
        model, architecture = base.model, base.info.architecture
        config.version = _version(config, base.info.version)  # as the file name says
    else:
        model = build_classifier(len(names), (size, size, 3))
        architecture = {"builder": "efficientnetb0_classifier", "task": task,
                        "kwargs": {"n_classes": len(names), "input_shape": [size, size, 3]}}
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    weights = class_weights([e.label for e in train], len(names))
    stem = os.path.splitext(os.path.abspath(config.out))[0]
    checkpoint = f"{stem}.checkpoint.weights.h5"
    atomic_checkpoint, json_progress = _keras_callbacks()
    monitor = "val_accuracy" if val else "accuracy"
    callbacks = [atomic_checkpoint(checkpoint, monitor), keras.callbacks.CSVLogger(f"{stem}.training.csv"),
                 keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience,
                                               restore_best_weights=True),
                 *([json_progress(config.epochs, config.steps_per_epoch)] if config.progress_json else [])]
    validation = (np.stack([e.image for e in val]), np.array([e.label for e in val])) if val else None
    start = time.time()
    history = model.fit(ClassifierPatches(train, config.batch_size, config.steps_per_epoch, config.seed),
                        epochs=config.epochs, validation_data=validation, class_weight=weights,
                        callbacks=callbacks, verbose=0 if config.progress_json else 2)
    seconds = time.time() - start
    if os.path.exists(checkpoint):
        model.load_weights(checkpoint)
        os.remove(checkpoint)
    card = {
        "training_data": config.training_data,
        "task": (f"{task}: {', '.join(names)}" + (" (Gleason pattern of a patch)" if task == "gleason" else "")
                 + " -- research use only, not for diagnosis"),
        "split": {"train cases": sorted({e.case for e in train}), "validation cases": sorted({e.case for e in val}),
                  "test cases (held out, reported)": sorted({e.case for e in test})},
        "class_counts": {"train": {n: sum(e.label == k for e in train) for k, n in enumerate(names)}},
        "class_weights": {names[k]: w for k, w in weights.items()},
        "metrics": {"test": evaluate_classifier(model, test, names),
                    "validation": evaluate_classifier(model, val, names)},
        "training": {"epochs_run": len(history.history.get("loss", [])), "seconds": round(seconds, 1),
                     "backend": keras.backend.backend(),
                     "config": {k: v for k, v in asdict(config).items() if k != "extra_card"}},
        "reproduce": config.reproduce,
    }
    if not test:
        card["metrics"]["note"] = "no held-out slide: give --test-cases to measure kappa on unseen slides"
    recipe = Recipe(tile_size=size, overlap=0, mpp=config.mpp, divisor=1)
    classes = [{"label": k, "name": n} for k, n in enumerate(names)]
    info = save_bundle(model, config.out, name=config.name, version=config.version, architecture=architecture,
                       recipe=recipe, classes=classes, card=card)
    processes.emit(processes.Done(f"saved {config.out} (version {config.version})", {
        "bundle": config.out, "version": config.version,
        "test_kappa": card["metrics"]["test"].get("quadratic_weighted_kappa")}))
    return info, history
