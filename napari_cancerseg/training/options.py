"""``TrainOptions``: the one home of a training run's settings and their defaults.

``cancerseg train`` generates its options from these fields (``cli.add_options``),
the training dock builds one and turns it into the child's argv
(``Options.to_argv``), and ``trainer.train`` / ``classifier.train_classifier``
take it (``TrainConfig`` is this class).  No TensorFlow here: the napari
process imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..inference.options import (
    FLAG,
    INT,
    MAPPING,
    NAMES,
    NUMBERS,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    POSITIVE_INTS,
    TEXT,
    Options,
    setting,
)

ARCHITECTURES = ("unet", "sk_unet")
LOSSES = ("bce", "dice", "bce_dice", "focal", "cce", "multiclass_dice", "cce_dice")  # models.losses.LOSSES' keys


def default_class_names(n_classes: int) -> tuple[str, ...]:
    """Names when none are given: background/foreground for one sigmoid output, class_i for softmax classes."""
    return ("background", "foreground") if n_classes == 1 else tuple(f"class_{i}" for i in range(n_classes))


@dataclass
class TrainOptions(Options):
    """How a model is trained and saved.  Not frozen: ``train`` adopts the head of a bundle it fine-tunes."""

    out: str = setting(kind=TEXT, help="bundle path (.keras); with --init, default: the next version beside it")
    name: str = setting("unet", kind=TEXT, help="model name in the bundle and its card")
    version: str = setting("1.0.0", kind=TEXT, help="model version in the bundle and its card")
    architecture: str = setting("unet", kind=TEXT, choices=ARCHITECTURES, help="segmentation network")
    filters: tuple[int, ...] = setting((16, 32, 64, 128, 256), kind=POSITIVE_INTS,
                                       help="filters per U-Net level, comma-separated (its depth is their number)")
    dropout: tuple[float, ...] = setting((0.1, 0.1, 0.2, 0.2, 0.3), kind=NUMBERS, cli=False,
                                         help="dropout per U-Net level (one per filter)")
    n_classes: int = setting(1, kind=POSITIVE_INT, flag="--classes", help="1: sigmoid foreground; >1: softmax classes")
    class_names: tuple[str, ...] | None = setting(
        None, kind=NAMES, none="background,foreground for 1 class, else class_0,class_1,...",
        help="comma-separated names, label 0 first")
    size: int = setting(256, kind=POSITIVE_INT, help="training patch side (multiple of 2**depth)")
    batch_size: int = setting(8, kind=POSITIVE_INT, flag="--batch", help="patches per training step")
    epochs: int = setting(50, kind=POSITIVE_INT, help="most epochs (early stopping may end sooner)")
    steps_per_epoch: int = setting(50, kind=POSITIVE_INT, flag="--steps", help="batches per epoch")
    learning_rate: float = setting(1e-3, kind=POSITIVE_FLOAT, flag="--lr", help="Adam's learning rate")
    loss: str = setting("bce_dice", kind=TEXT, choices=LOSSES, help="training loss")
    patience: int = setting(10, kind=POSITIVE_INT, help="epochs without improvement before stopping")
    seed: int = setting(0, kind=INT, help="random seed (patches, augmentation, weights)")
    mpp: float | None = setting(None, kind=POSITIVE_FLOAT, none="not recorded",
                                help="µm per pixel of the training images (slides)")
    channels: int = setting(3, kind=INT, choices=(1, 3), help="image channels: 3 RGB, 1 grey (MRI)")
    augment: bool = setting(True, kind=FLAG, help="flip, rotate and colour-jitter the training patches")
    training_data: str = setting("", kind=TEXT, help="description of the training data for the model card")
    reproduce: str = setting("", kind=TEXT, cli=False, help="the command that reproduces this run, for the card")
    notes: str = setting("", kind=TEXT, cli=False, help="notes for the model card")
    init_bundle: str | None = setting(None, kind=TEXT, flag="--init", metavar="BUNDLE", none="a new model",
                                      help="fine-tune this bundle (its classes and recipe) instead of a new U-Net")
    progress_json: bool = setting(False, kind=FLAG, help="one JSON line per step and epoch on stdout "
                                  "(the napari training dock reads them)")
    # setting() returns a dataclasses.field (here with a default_factory), which ruff cannot see
    extra_card: dict[str, Any] = setting(kind=MAPPING, factory=dict, cli=False,  # noqa: RUF009
                                         help="more model card fields")

    def __post_init__(self) -> None:
        if self.class_names is None:  # None: the names follow the number of classes
            self.class_names = default_class_names(self.n_classes)
