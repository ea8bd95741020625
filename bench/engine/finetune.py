"""The second stage (--fine-tune): a frozen run's model trained on, its backbone unfrozen.

As Keras' transfer-learning guide does it: the backbone's weights become trainable (all of
them, or those of its last N layers holding weights with --fine-tune-layers N), the model is
recompiled with Adam at a small learning rate (--fine-tune-lr) and trained for
--fine-tune-epochs more with the same early stopping, starting from the frozen stage's head.

BatchNormalization stays in inference mode by its mode, not by an argument. The guide's
`base(x, training=False)` inside a functional model does not hold in Keras 3: the outer fit's
training=True reaches the inner layers, BatchNorm trains on batches of 32 and its moving
statistics drift (MobileNet_0.25 on the CIFAR stand-in: 0.625 frozen, 0.505 after four
epochs). Every BatchNormalization layer of the backbone is made non-trainable, which Keras 3
runs in inference mode whatever `training` says; its statistics, scale and offset stay as the
frozen stage had them. The backbone is still called through FrozenBackbone (dropout off, as
when the features were extracted).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

import keras
import numpy as np

from backbones import BackboneSpec
from bench.config import RunConfig
from bench.data import Dataset
from bench.engine import head, routes
from bench.engine.routes import Outcome
from bench.engine.splits import make_splits
from bench.identity import RunIdentity
from bench.result import FINE_TUNED


def unfreeze(backbone: keras.Model, last_layers: int | None = None) -> list[str]:
    """Makes the backbone trainable but its BatchNormalization layers (and, given
    `last_layers`, all but its last that many layers holding weights); returns the names of
    the layers whose weights will train."""
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    weighted = [layer for layer in backbone.layers if layer.weights]
    if last_layers is not None:
        for layer in weighted[:-last_layers]:
            layer.trainable = False
    return [layer.name for layer in weighted if layer.trainable and layer.trainable_weights]


def build_model(spec: BackboneSpec, inputs: keras.KerasTensor, outputs: keras.KerasTensor,
                n_classes: int, seed: int, head_weights: Sequence[np.ndarray] | None = None,
                ) -> tuple[keras.Model, keras.Sequential]:
    """(the whole model, its head): the head, drawn from the run's `seed` and holding
    `head_weights` when given, on `outputs`, the features of features.backbone_graph's graph.
    The fine-tuned stage trains this model and saves its get_weights(); export rebuilds it to
    load them."""
    keras.utils.set_random_seed(seed)
    top = head.build_head(n_classes)
    top.build((None, int(outputs.shape[-1])))
    if head_weights is not None:
        top.set_weights(head_weights)
    return keras.Model(inputs, top(outputs), name=f"{spec.name}_fine_tuned"), top


def fine_tune(spec: BackboneSpec, config: RunConfig, data: Dataset, ident: RunIdentity,
              frozen: Outcome, frozen_hash: str) -> Outcome:
    """The fine-tuned run of `config` (fine_tune set), continuing `frozen`, the outcome of its
    frozen stage (identified by `frozen_hash`). With --fine-tune-epochs 0 it is the frozen
    stage's outcome itself."""
    stage = dict(stage=FINE_TUNED, frozen_accuracy=float(np.mean(
        frozen.predictions == frozen.labels)), frozen_predictions=frozen.predictions.tolist(),
        frozen_config_hash=frozen_hash)
    if config.fine_tune_epochs == 0:
        return replace(frozen, stage_fields=stage)
    backbone, inputs, outputs = routes.frozen_backbone(spec, config, data, ident)
    model, _ = build_model(spec, inputs, outputs, data.n_classes, config.seed,
                           frozen.head_weights)
    unfreeze(backbone, config.fine_tune_layers)
    splits = make_splits(data.train_images, data.test_images, data, config)
    # the whole model's weights go to the head file: export rebuilds the fine-tuned backbone
    trained = routes.train(model, splits, replace(config, epochs=config.fine_tune_epochs),
                           feature_width=int(outputs.shape[-1]),
                           optimizer=keras.optimizers.Adam(config.fine_tune_lr))
    steady = statistics.median(trained.epoch_times[1:] or trained.epoch_times)
    stage.update(fine_tune_epoch_s=steady, fine_tune_images_per_s=len(splits.x_train) / steady)
    return replace(trained, extract_s=frozen.extract_s, features_cached=frozen.features_cached,
                   infer_ms=frozen.infer_ms, runtime_fields=frozen.runtime_fields,
                   stage_fields=stage)
