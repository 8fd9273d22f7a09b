"""Models, losses, metrics and bundles (Keras 3, whichever backend KERAS_BACKEND selects)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from napari_cancerseg.models import losses, metrics  # noqa: E402
from napari_cancerseg.models.bundle import BundleError, Recipe, bundle_info, load_bundle, save_bundle  # noqa: E402
from napari_cancerseg.models.classifier import build_classifier  # noqa: E402
from napari_cancerseg.models.sk_unet import build_sk_unet  # noqa: E402
from napari_cancerseg.models.unet import build_unet  # noqa: E402


def unet_parameter_count(filters, in_channels=3, n_classes=1, batch_norm=True) -> int:
    """Independent count: 3x3 convs (bias only without BN), BN with 4 parameters per channel,
    2x2 transposed convs with bias, 1x1 head."""
    def block(cin, f):
        conv = 9 * cin * f + (0 if batch_norm else f)
        conv2 = 9 * f * f + (0 if batch_norm else f)
        return conv + conv2 + (8 * f if batch_norm else 0)

    total, cin, skips = 0, in_channels, []
    for f in filters[:-1]:
        total += block(cin, f)
        skips.append(f)
        cin = f
    total += block(cin, filters[-1])
    cin = filters[-1]
    for f in reversed(filters[:-1]):
        total += 4 * cin * f + f  # transposed conv
        total += block(2 * f, f)
        cin = f
    return total + cin * n_classes + n_classes


def test_default_unet_is_the_prostate_unet():
    model = build_unet()
    assert model.input_shape == (None, 512, 512, 3) and model.output_shape == (None, 512, 512, 1)
    assert model.count_params() == unet_parameter_count((16, 32, 64, 128, 256))
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(pools) == 4
    assert dropouts == [0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1]
    assert model.layers[-1].activation.__name__ == "sigmoid"


@pytest.mark.parametrize("kwargs, in_shape, out_shape", [
    ({"input_shape": (128, 96, 1), "filters": (8, 16, 32), "dropout": (0, 0, 0)}, (2, 128, 96, 1), (2, 128, 96, 1)),
    ({"input_shape": (64, 64, 3), "filters": (8, 16, 32, 64), "dropout": (0.1,) * 4, "decoder": "upsample",
      "n_classes": 5, "activation": "softmax", "batch_norm": False}, (1, 64, 64, 3), (1, 64, 64, 5)),
    ({"input_shape": (None, None, 3), "filters": (8, 16), "dropout": (0, 0), "input_dtype": "uint8"},
     (1, 48, 80, 3), (1, 48, 80, 1)),
])
def test_unet_variants_predict(kwargs, in_shape, out_shape):
    model = build_unet(**kwargs)
    dtype = kwargs.get("input_dtype", "float32")
    x = np.random.default_rng(0).integers(0, 255, in_shape).astype(dtype)
    y = np.asarray(model.predict_on_batch(x))
    assert y.shape == out_shape
    if kwargs.get("activation") == "softmax":
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-4)
    if kwargs.get("batch_norm") is False:
        # the upsample decoder's 2x2 convolution has as many weights as a 2x2 transposed convolution
        assert model.count_params() == unet_parameter_count((8, 16, 32, 64), 3, 5, batch_norm=False)


def test_unet_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 16"):
        build_unet(input_shape=(100, 100, 3))
    with pytest.raises(ValueError, match="channels"):
        build_unet(input_shape=(64, 64, 4), filters=(8, 16), dropout=(0, 0))


def test_sk_unet_selective_kernel_block():
    model = build_sk_unet(input_shape=(64, 64, 1), filters=(8, 16, 32), dropout=(0, 0, 0))
    assert model.output_shape == (None, 64, 64, 1)
    dilated = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
               and layer.dilation_rate == (2, 2)]
    assert len(dilated) == 5  # one dilated branch per block: 2 encoder, bottleneck, 2 decoder
    squeeze = model.get_layer("enc1_squeeze")
    assert squeeze.units == 4 and model.get_layer("enc1_attention").units == 8
    assert np.asarray(model.predict_on_batch(np.zeros((1, 64, 64, 1), "float32"))).shape == (1, 64, 64, 1)


def test_sk_block_output_is_attention_mix_of_branches():
    """Reference: a*A + (1-a)*B computed from the block's own intermediate tensors."""
    model = build_sk_unet(input_shape=(32, 32, 1), filters=(4, 8), dropout=(0, 0))
    names = ["enc1_a_relu", "enc1_b_relu", "enc1_attention", "enc1_select"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    a_branch, b_branch, attention, out = (np.asarray(t) for t in probe.predict_on_batch(
        np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype("float32")))
    expected = attention[:, None, None, :] * a_branch + (1 - attention[:, None, None, :]) * b_branch
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_classifier_builds_without_download():
    model = build_classifier(n_classes=4, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 4)
    y = np.asarray(model.predict_on_batch(np.zeros((2, 64, 64, 3), "float32")))
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="download"):
        build_classifier(weights="imagenet")
    with pytest.raises(FileNotFoundError):
        build_classifier(weights="/nonexistent/efficientnetb0_notop.h5")


# ------------------------------------------------------------------ losses


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture
def binary_batch():
    rng = np.random.default_rng(7)
    y_true = (rng.random((4, 16, 16, 1)) > 0.7).astype("float32")
    y_true[1] = 0  # an empty mask
    y_pred = rng.uniform(0.01, 0.99, (4, 16, 16, 1)).astype("float32")
    return y_true, y_pred


def test_bce_matches_numpy(binary_batch):
    t, p = binary_batch
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(losses.binary_crossentropy(t, p)), expected, rtol=1e-5)


def test_soft_dice_is_per_sample_and_smoothed(binary_batch):
    t, p = binary_batch
    expected = 1 - (2 * (t * p).sum(axis=(1, 2, 3)) + 1) / (t.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3)) + 1)
    np.testing.assert_allclose(_np(losses.soft_dice_loss(t, p)), expected, rtol=1e-5)
    perfect = _np(losses.soft_dice_loss(t, t))
    np.testing.assert_allclose(perfect, 0.0, atol=1e-6)  # empty sample included: smoothing makes it 0


def test_focal_matches_numpy(binary_batch):
    t, p = binary_batch
    p_t = np.where(t == 1, p, 1 - p)
    alpha_t = np.where(t == 1, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * np.log(p_t)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(losses.focal_loss(2.0, 0.25)(t, p)), expected, rtol=1e-5)


def test_multiclass_losses_match_numpy():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, (3, 8, 8))
    labels[2] = 0  # only background in one sample
    t = np.eye(4, dtype="float32")[labels]
    logits = rng.normal(size=(3, 8, 8, 4))
    p = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    np.testing.assert_allclose(_np(losses.categorical_crossentropy(t, p)), (-(t * np.log(p)).sum(-1)).mean(axis=(1, 2)),
                               rtol=1e-5)
    dice = (2 * (t * p).sum(axis=(1, 2)) + 1) / (t.sum(axis=(1, 2)) + p.sum(axis=(1, 2)) + 1)
    np.testing.assert_allclose(_np(losses.multiclass_dice_loss(t, p)), 1 - dice.mean(-1), rtol=1e-5)


# ----------------------------------------------------------------- metrics


def test_dice_and_iou_against_set_arithmetic():
    rng = np.random.default_rng(9)
    a, b = rng.random((50, 40)) > 0.6, rng.random((50, 40)) > 0.5
    inter, union = np.sum(a & b), np.sum(a | b)
    assert metrics.dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()))
    assert metrics.iou(a, b) == pytest.approx(inter / union)
    empty = np.zeros_like(a)
    assert metrics.dice(empty, empty) == 1.0 and metrics.dice(a, empty) == 0.0


def test_per_image_is_not_pooled():
    big_good = np.ones((100, 100), bool)
    small_bad_pred, small_bad_truth = np.zeros((10, 10), bool), np.ones((10, 10), bool)
    scores = metrics.per_image([big_good, small_bad_pred], [big_good, small_bad_truth])
    assert [s["dice"] for s in scores] == [1.0, 0.0]
    assert metrics.summary(scores)["mean"] == 0.5  # pooling the pixels would claim 0.99


def test_per_case_groups_slices():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    result = metrics.per_case([a, a, ~a], [a, a, a], ["p1", "p1", "p2"])
    assert result["p1"]["dice"] == 1.0 and result["p2"]["dice"] == 0.0


def test_keras_dice_metric_is_mean_of_per_image_dice():
    rng = np.random.default_rng(10)
    t = (rng.random((3, 8, 8, 1)) > 0.5).astype("float32")
    p = rng.random((3, 8, 8, 1)).astype("float32")
    metric = metrics.DicePerImage()
    metric.update_state(t, p)
    expected = np.mean([metrics.dice(p[i, ..., 0] > 0.5, t[i, ..., 0] > 0.5) for i in range(3)])
    assert float(_np(metric.result())) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------- bundles


def test_bundle_round_trip_predicts_identically(tmp_path):
    model = build_unet(input_shape=(None, None, 3), filters=(8, 16, 32), dropout=(0.1, 0.1, 0.1), input_dtype="uint8")
    path = tmp_path / "tiny.keras"
    classes = [{"label": 0, "name": "background"}, {"label": 1, "name": "nucleus"}]
    save_bundle(model, path, name="tiny", version="0.1", architecture={"builder": "unet", "kwargs": {}},
                recipe=Recipe(tile_size=64, overlap=8, mpp=0.5, divisor=4), classes=classes,
                card={"metrics": {"dice": 0.5}})
    info = bundle_info(path)
    assert info.recipe.tile_size == 64 and info.class_names == {0: "background", 1: "nucleus"}
    bundle = load_bundle(path)
    tile = np.random.default_rng(11).integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not a multiple of 4
    probabilities = bundle.predict_tile(tile)
    assert probabilities.shape == (50, 70, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)
    padded = np.pad(tile, ((0, 2), (0, 2), (0, 0)), mode="reflect")[None]
    direct = np.asarray(model.predict_on_batch(padded))[0, :50, :70, 0]
    np.testing.assert_allclose(probabilities[..., 1], direct, atol=1e-6)


def test_not_a_bundle_gives_clear_errors(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a .keras"):
        load_bundle(junk)
    plain = tmp_path / "plain.keras"
    build_unet(input_shape=(32, 32, 3), filters=(4, 8), dropout=(0, 0)).save(plain)
    with pytest.raises(BundleError, match="plain Keras model"):
        bundle_info(plain)
    with pytest.raises(BundleError, match="no such"):
        bundle_info(tmp_path / "missing.keras")


def test_one_training_step_on_real_tile_lowers_the_loss():
    from PIL import Image

    from ..conftest import stand_in_path

    image = np.asarray(Image.open(stand_in_path("nuclei/image01.png")).convert("RGB"))[:128, :128]
    mask = (np.asarray(Image.open(stand_in_path("nuclei/image01_labels.png")))[:128, :128] > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = build_unet(input_shape=(128, 128, 3), filters=(8, 16, 32), dropout=(0, 0, 0), input_dtype="uint8")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.bce_dice_loss)
    x, y = image[None], mask[None, ..., None]

    def loss() -> float:  # in training mode: batch statistics, as the step itself sees them
        return float(_np(losses.bce_dice_loss(y, model(x, training=True)))[0])

    before = loss()
    model.train_on_batch(x, y)
    assert loss() < before


def test_bundle_holds_weights_not_optimizer_state(tmp_path):
    import zipfile

    model = build_unet(input_shape=(None, None, 3), filters=(8, 16, 32), dropout=(0, 0, 0), input_dtype="uint8")
    model.compile(optimizer=keras.optimizers.Adam(), loss=losses.bce_dice_loss)
    model.train_on_batch(np.zeros((1, 32, 32, 3), "uint8"), np.zeros((1, 32, 32, 1), "float32"))
    path = tmp_path / "trained.keras"
    save_bundle(model, path, name="t", version="1", architecture={}, recipe=Recipe(), classes=[])
    fresh = tmp_path / "fresh.keras"
    build_unet(input_shape=(None, None, 3), filters=(8, 16, 32), dropout=(0, 0, 0), input_dtype="uint8").save(fresh)
    with zipfile.ZipFile(path) as bundle, zipfile.ZipFile(fresh) as plain:
        bundled, reference = (z.getinfo("model.weights.h5").file_size for z in (bundle, plain))
    assert bundled <= 1.05 * reference  # an uncompiled model's weights, no Adam moments


def test_a_save_killed_midway_leaves_nothing_the_next_save_keeps(tmp_path):
    """A training killed while saving left a 0-byte PATH.tmp-PID.keras; the next save of that bundle removes it
    (its process is gone), and never a temporary of a process that is still saving."""
    import subprocess
    import sys

    path = tmp_path / "m.keras"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"m.keras.tmp-{int(dead.stdout)}.keras"
    stale.write_bytes(b"")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        saving = tmp_path / f"m.keras.tmp-{alive.pid}.keras"
        saving.write_bytes(b"")
        model = build_unet(input_shape=(None, None, 3), filters=(4, 8), dropout=(0, 0), input_dtype="uint8")
        save_bundle(model, path, name="m", version="1", architecture={"builder": "unet"}, recipe=Recipe(divisor=2),
                    classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "nucleus"}])
        assert bundle_info(path).name == "m"
        assert not stale.exists() and saving.exists()
    finally:
        alive.kill()
        alive.wait()
