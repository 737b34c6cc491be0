"""``nn``: the study's "3-layer" network (input -> one hidden layer -> softmax output).

:class:`~sklearn.neural_network.MLPClassifier` with :data:`NN_HIDDEN_UNITS` ReLU units, Adam (lr 1e-3), at most
:data:`NN_MAX_EPOCHS` epochs, early stopping on a 10% stratified validation part after :data:`NN_PATIENCE`
epochs without improvement; ``batch_size`` is the grid parameter. Folds and settings run in parallel processes.
"""
from __future__ import annotations

import numpy as np

from pintopic.classify.catalog import Context
from pintopic.classify.metrics import f1_macro
from pintopic.classify.saver import Saver

NN_HIDDEN_UNITS = 256
NN_MAX_EPOCHS = 200
NN_PATIENCE = 10
NN_VALIDATION_FRACTION = 0.1


def nn_early_stopping_possible(n_samples: int, n_classes: int) -> bool:
    """MLPClassifier's stratified validation part needs at least one row per class."""
    return int(np.ceil(NN_VALIDATION_FRACTION * n_samples)) >= n_classes and n_samples - n_classes >= n_classes


def build(params: dict, context):
    from sklearn.neural_network import MLPClassifier

    n_samples, n_classes = context.n_samples, context.n_classes
    early = n_samples is None or n_classes is None or nn_early_stopping_possible(n_samples, n_classes)
    return MLPClassifier(
        hidden_layer_sizes=(NN_HIDDEN_UNITS,), activation="relu", solver="adam", learning_rate_init=1e-3,
        batch_size=int(params.get("batch_size", 64)), max_iter=NN_MAX_EPOCHS, early_stopping=early,
        validation_fraction=NN_VALIDATION_FRACTION, n_iter_no_change=NN_PATIENCE, random_state=context.seed,
    )


def nn_fold_score(X, y_index, train, val, batch_size: int, seed: int) -> float:
    """Macro-F1 on ``val`` of the NN pipeline with this batch size, fitted on ``train``."""
    from pintopic.classify.estimators import pipeline

    context = Context(seed=seed, n_samples=len(train), n_classes=int(y_index.max()) + 1)
    model = pipeline(build({"batch_size": batch_size}, context))
    model.fit(X[train], y_index[train])
    return f1_macro(y_index[val], model.predict(X[val]))


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    """An NN fit is always heavy enough to pay for a second process."""
    from joblib import Parallel, delayed

    sizes = [s["batch_size"] for s in settings]
    flat = Parallel(n_jobs=context.n_jobs)(delayed(nn_fold_score)(X, y_index, tr, va, b, context.seed)
                                           for tr, va in folds for b in sizes)
    return np.asarray([flat[i * len(sizes):(i + 1) * len(sizes)] for i in range(len(folds))])


def _restore(model, arrays: dict):
    from sklearn.preprocessing import LabelBinarizer

    n_layers = sum(1 for key in arrays if key.startswith("coefs_"))
    model.coefs_ = [arrays[f"coefs_{i}"] for i in range(n_layers)]
    model.intercepts_ = [arrays[f"intercepts_{i}"] for i in range(n_layers)]
    model.n_layers_ = n_layers + 1
    model.n_outputs_ = model.coefs_[-1].shape[1]
    model.out_activation_ = "softmax" if model.n_outputs_ > 1 else "logistic"
    model.n_features_in_ = model.coefs_[0].shape[0]
    model._label_binarizer = LabelBinarizer().fit(arrays["classes_"])
    model.classes_ = model._label_binarizer.classes_
    return model


def _arrays(model) -> dict:
    arrays = {"classes_": model.classes_}
    for i, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_)):
        arrays[f"coefs_{i}"], arrays[f"intercepts_{i}"] = coef, intercept
    return arrays


def _mlp(**params):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(**params)


SAVERS = {"MLPClassifier": Saver(
    cls=_mlp, params=("hidden_layer_sizes", "activation", "solver", "learning_rate_init", "batch_size", "max_iter",
                      "early_stopping", "validation_fraction", "n_iter_no_change", "random_state", "alpha"),
    arrays=_arrays, restore=_restore, list_params=("hidden_layer_sizes",))}
