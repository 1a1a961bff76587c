"""Row (d) of bench_train.py: the seed notebook's own Keras stack, timed in this process.

    python keras_seed.py IMAGES.npy LABELS.npy '{"short": 5, "long": 55, "warmup": 3, "bare": 20}'

Needs only numpy and TensorFlow (the ``bench`` extra, or any interpreter that has them, passed to
bench_train.py as ``--keras-python``), never torch or cxrnet. The images are the uint8 films that
bench_train.py's other rows train on (150x150 grayscale), so every row sees the same pixels.

What it runs is the notebook's recipe (../shared/DESIGN.md): its Sequential network (ReLU, then
BatchNorm, then a max-pool that rounds up), Adam 1e-3, binary cross-entropy with its accuracy
metric, the balanced class weights, ``ImageDataGenerator`` (rotation 20, zoom 0.2, shifts 0.1,
horizontal flip) fitted on the images and fed through ``model.fit(datagen.flow(...))`` with
ReduceLROnPlateau on a validation loss. Two rates:

- end to end: ``model.fit`` for ``short`` and for ``long`` steps (one epoch each, after a warm-up
  fit that traces the graph); the rate is the extra images over the extra wall time, as
  bench_train.py does for cxrnet-train, so per-call overhead and validation cancel;
- bare step: ``train_on_batch`` on batches already in memory, the notebook's network alone.

Prints one JSON line last.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

BATCH = 32


def seed_network(size: int) -> tf.keras.Model:
    layers = tf.keras.layers
    blocks: list[tf.keras.layers.Layer] = [tf.keras.Input(shape=(size, size, 1))]
    for kind, filters in (("conv", 32), ("separable", 32), ("conv", 64), ("separable", 64)):
        layer = layers.Conv2D if kind == "conv" else layers.SeparableConv2D
        blocks += [
            layer(filters, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPool2D(2, padding="same"),
        ]
    blocks += [
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(1, activation="sigmoid"),
    ]
    model = tf.keras.Sequential(blocks)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels.astype(int), minlength=2)
    return {k: len(labels) / (2 * counts[k]) for k in range(2)}


def main() -> None:
    images = np.load(sys.argv[1])[..., None].astype("float32") / 255.0  # the notebook's x / 255
    labels = np.load(sys.argv[2]).astype("float32")
    plan = json.loads(sys.argv[3])
    tf.keras.utils.set_random_seed(0)
    model = seed_network(images.shape[1])
    datagen = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=20,
        zoom_range=0.2,
        width_shift_range=0.1,
        height_shift_range=0.1,
        horizontal_flip=True,
    )
    datagen.fit(images)
    weights = balanced_class_weights(labels)
    # The notebook validated on its 16 validation films every epoch; 16 of these stand in.
    validation = (images[:16], labels[:16])
    callbacks = [
        tf.keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.3, patience=2, min_lr=1e-6, verbose=0
        )
    ]

    def fit(steps: int) -> float:
        start = time.perf_counter()
        model.fit(
            datagen.flow(images, labels, batch_size=BATCH),
            steps_per_epoch=steps,
            epochs=1,
            class_weight=weights,
            validation_data=validation,
            callbacks=callbacks,
            verbose=0,
        )
        return time.perf_counter() - start

    fit(plan["warmup"])
    short_s, long_s = fit(plan["short"]), fit(plan["long"])

    x, y = images[: BATCH * plan["bare"]], labels[: BATCH * plan["bare"]]
    for i in range(plan["warmup"]):
        model.train_on_batch(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    start = time.perf_counter()
    for i in range(plan["bare"]):
        model.train_on_batch(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    bare_s = time.perf_counter() - start

    extra = (plan["long"] - plan["short"]) * BATCH
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(
        json.dumps(
            {
                "fit_short_s": short_s,
                "fit_long_s": long_s,
                "images_per_s": extra / (long_s - short_s) if long_s > short_s else float("nan"),
                "bare_images_per_s": plan["bare"] * BATCH / bare_s,
                "trainable_parameters": trainable,
                "tensorflow": tf.__version__,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
