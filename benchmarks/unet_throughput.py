"""Inference throughput of the default U-Net (512 x 512 x 3, 16-256 filters) on 512 x 512 tiles.

Run with ``KERAS_BACKEND=jax`` on a GPU (the lent H100/H200).  Rows, all in one run:

* baseline: ``model.predict_on_batch`` with float32 host inputs and float32
  weights (how Keras is usually called; the issue measured ~970 tiles/s);
* float32, jitted stateless call, uint8 tiles sent to the device;
* bf16 mixed precision, jitted, uint8 tiles sent from the host each batch and
  converted on the device (what the inference engine does), probabilities back;
* the same returning uint8 argmax labels (4x less to copy back);
* bf16 with the batch already on the device (the pure forward rate).

    KERAS_BACKEND=jax python benchmarks/unet_throughput.py [--batch 64] [--batches 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def build(policy: str, input_dtype: str):
    import keras

    from napari_cancerseg.models.unet import build_unet

    keras.mixed_precision.set_global_policy(policy)
    model = build_unet(input_shape=(512, 512, 3), input_dtype=input_dtype)
    keras.mixed_precision.set_global_policy("float32")
    return model


def timed(run, batches: int, batch: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    start = time.perf_counter()
    for _ in range(batches):
        run()
    return batches * batch / (time.perf_counter() - start)


def jax_rows(args, host_uint8: np.ndarray) -> list[tuple[str, float]]:
    import jax
    import jax.numpy as jnp

    rows = []
    host_float = host_uint8.astype(np.float32) / 255.0
    baseline_model = build("float32", "float32")
    rows.append(("baseline: predict_on_batch, float32 host input, float32",
                 timed(lambda: np.asarray(baseline_model.predict_on_batch(host_float)), args.batches, args.batch)))

    for policy, label in (("float32", "float32"), ("mixed_bfloat16", "bf16 mixed")):
        model = build(policy, "uint8")
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def forward(x, trainable=trainable, non_trainable=non_trainable, model=model):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return out

        @jax.jit
        def forward_labels(x, trainable=trainable, non_trainable=non_trainable, model=model):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return (out[..., 0] > 0.5).astype(jnp.uint8)

        rows.append((f"{label}, jit, uint8 host tiles -> probabilities to host",
                     timed(lambda: np.asarray(forward(jax.device_put(host_uint8))), args.batches, args.batch)))
        rows.append((f"{label}, jit, uint8 host tiles -> uint8 labels to host",
                     timed(lambda: np.asarray(forward_labels(jax.device_put(host_uint8))), args.batches, args.batch)))
        on_device = jax.device_put(host_uint8)
        rows.append((f"{label}, jit, batch already on device (pure forward)",
                     timed(lambda: forward(on_device).block_until_ready(), args.batches, args.batch)))
    return rows


def generic_rows(args, host_uint8: np.ndarray) -> list[tuple[str, float]]:
    host_float = host_uint8.astype(np.float32) / 255.0
    baseline_model = build("float32", "float32")
    rows = [("baseline: predict_on_batch, float32 host input, float32",
             timed(lambda: np.asarray(baseline_model.predict_on_batch(host_float)), args.batches, args.batch))]
    model = build("mixed_bfloat16", "uint8")
    rows.append(("bf16 mixed, predict_on_batch, uint8 host tiles",
                 timed(lambda: np.asarray(model.predict_on_batch(host_uint8)), args.batches, args.batch)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    import keras

    rng = np.random.default_rng(0)
    host_uint8 = rng.integers(0, 256, (args.batch, 512, 512, 3), dtype=np.uint8)
    backend = keras.backend.backend()
    rows = jax_rows(args, host_uint8) if backend == "jax" else generic_rows(args, host_uint8)
    device = "cpu"
    if backend == "jax":
        import jax

        device = str(jax.devices()[0].device_kind)
    print(f"# default U-Net, 512x512x3 tiles, batch {args.batch}, backend {backend}, keras {keras.__version__}, "
          f"device {device}")
    print("| variant | tiles/s | ratio to baseline |")
    print("|---|---|---|")
    base = rows[0][1]
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
