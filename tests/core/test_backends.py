"""Every architecture builds and predicts on each Keras backend installed (each in its own process)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np, keras
from napari_cancerseg.models.unet import build_unet
from napari_cancerseg.models.sk_unet import build_sk_unet
from napari_cancerseg.models.classifier import build_classifier
from napari_cancerseg.models.losses import bce_dice_loss
assert keras.backend.backend() == "{backend}", keras.backend.backend()
unet = build_unet(input_shape=(64, 64, 3), filters=(8, 16, 32), dropout=(0.1, 0.1, 0.2), input_dtype="uint8")
sk = build_sk_unet(input_shape=(64, 64, 1), filters=(8, 16, 32), dropout=(0, 0, 0))
clf = build_classifier(n_classes=3, input_shape=(64, 64, 3))
x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
p = np.asarray(unet.predict_on_batch(x))
assert p.shape == (2, 64, 64, 1) and 0 <= p.min() and p.max() <= 1
assert np.asarray(sk.predict_on_batch(x[..., :1].astype("float32") / 255)).shape == (2, 64, 64, 1)
q = np.asarray(clf.predict_on_batch(x.astype("float32")))
assert q.shape == (2, 3) and np.allclose(q.sum(-1), 1, atol=1e-5)
unet.compile(optimizer="adam", loss=bce_dice_loss)
loss = unet.train_on_batch(x, (x[..., :1] > 128).astype("float32"))
assert np.isfinite(float(np.asarray(loss)))
print("ok", keras.backend.backend(), unet.count_params(), sk.count_params(), clf.count_params())
"""

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# JAX compiles one XLA program per weight shape to initialise a model (159 for EfficientNetB0), and each train and
# predict step: 75 s of CPU on CI's 2 cores at XLA's default optimisation, 32 s without its expensive passes. The
# test checks shapes, value ranges and a finite loss, which do not depend on how hard XLA optimised the code.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_models_on_backend(backend):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed here (checked on the GPU machine: benchmarks/backends.txt)")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if backend == "jax":
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(backend=backend)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = out.stdout.split()[-3:]
    assert out.stdout.startswith("ok") and len(set(counts)) == 3
