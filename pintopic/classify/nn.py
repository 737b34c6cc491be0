"""``nn``: the study's "3-layer" network (input -> one hidden layer -> softmax output), and ``nn_sklearn``, its reference.

:class:`~sklearn.neural_network.MLPClassifier`'s rule: :data:`NN_HIDDEN_UNITS` ReLU units, Adam (lr 1e-3), at most
:data:`NN_MAX_EPOCHS` epochs, early stopping on a 10% validation part after :data:`NN_PATIENCE` epochs without
improvement; ``batch_size`` is the grid parameter. ``nn`` trains with PyTorch
(:mod:`pintopic.classify.mlp_torch`: the five folds of a batch size as one stack of networks, the same
random draws as scikit-learn); ``nn_sklearn`` fits scikit-learn's MLPClassifier itself, fold by fold in parallel
processes, and is what ``nn`` is checked against.
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
#: Below this many feature values, starting processes (each importing torch) costs more than it saves.
PARALLEL_MIN_VALUES = 2_000_000


def nn_early_stopping_possible(n_samples: int, n_classes: int) -> bool:
    """Enough rows for MLPClassifier's validation part to hold every class at least once."""
    from pintopic.classify.mlp_torch import early_stopping_possible

    return early_stopping_possible(n_samples, n_classes, NN_VALIDATION_FRACTION)


def _params(params: dict, context) -> dict:
    n_samples, n_classes = context.n_samples, context.n_classes
    early = n_samples is None or n_classes is None or nn_early_stopping_possible(n_samples, n_classes)
    return dict(hidden_layer_sizes=(NN_HIDDEN_UNITS,), activation="relu", solver="adam", learning_rate_init=1e-3,
                batch_size=int(params.get("batch_size", 64)), max_iter=NN_MAX_EPOCHS, early_stopping=early,
                validation_fraction=NN_VALIDATION_FRACTION, n_iter_no_change=NN_PATIENCE, random_state=context.seed)


def build(params: dict, context):
    """The network trained by PyTorch (:class:`~pintopic.classify.mlp_torch.BatchedMLPClassifier`)."""
    from pintopic.classify.mlp_torch import BatchedMLPClassifier

    return BatchedMLPClassifier(**_params(params, context))


def build_sklearn(params: dict, context):
    """The same network trained by scikit-learn's MLPClassifier (the reference)."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(**_params(params, context))


def nn_fold_score(X, y_index, train, val, batch_size: int, seed: int) -> float:
    """Macro-F1 on ``val`` of scikit-learn's NN pipeline with this batch size, fitted on ``train``."""
    from pintopic.classify.estimators import pipeline

    context = Context(seed=seed, n_samples=len(train), n_classes=int(y_index.max()) + 1)
    model = pipeline(build_sklearn({"batch_size": batch_size}, context))
    model.fit(X[train], y_index[train])
    return f1_macro(y_index[val], model.predict(X[val]))


def sklearn_fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    """Every (fold, batch size) fitted by scikit-learn, in parallel processes (an NN fit always pays for one)."""
    from joblib import Parallel, delayed

    sizes = [s["batch_size"] for s in settings]
    flat = Parallel(n_jobs=context.n_jobs)(delayed(nn_fold_score)(X, y_index, tr, va, b, context.seed)
                                           for tr, va in folds for b in sizes)
    return np.asarray([flat[i * len(sizes):(i + 1) * len(sizes)] for i in range(len(folds))])


def torch_fold_scores_of(X, y_index, folds, batch_size: int, seed: int, threads: int | None = None) -> list[float]:
    """Macro-F1 on each fold's validation rows of the networks of one batch size, trained together."""
    from pintopic.classify.mlp_torch import train_networks

    rule = _rule(batch_size, seed)
    n_classes = int(y_index.max()) + 1
    networks = train_networks(X, y_index, [train for train, _ in folds], rule, n_classes=n_classes, threads=threads)
    scores = []
    for (_, val), net in zip(folds, networks):
        mean, scale = net["scaler"]
        (W1, W2), (b1, b2) = net["coefs"], net["intercepts"]
        hidden = np.maximum(((X[val] - mean) / scale) @ W1 + b1, 0)
        scores.append(f1_macro(y_index[val], (hidden @ W2 + b2).argmax(axis=1)))
    return scores


def _rule(batch_size: int, seed: int):
    from pintopic.classify.mlp_torch import Rule

    return Rule(hidden=NN_HIDDEN_UNITS, batch_size=int(batch_size), max_epochs=NN_MAX_EPOCHS, patience=NN_PATIENCE,
                validation_fraction=NN_VALIDATION_FRACTION, seed=seed)


def _torch_supported(y_index, folds) -> bool:
    """Three classes or more, all in every fold's training rows, enough of them for early stopping (else
    scikit-learn fits, as each fold's MLPClassifier would then differ: a logistic output, no early stopping)."""
    n_classes = int(y_index.max()) + 1
    return n_classes >= 3 and all(len(np.unique(y_index[train])) == n_classes
                                  and nn_early_stopping_possible(len(train), n_classes) for train, _ in folds)


def fold_scores(X, y_index, folds, settings, context) -> np.ndarray:
    """The folds of each batch size trained as one stack; the batch sizes in parallel processes of one thread each."""
    from joblib import Parallel, delayed

    if not _torch_supported(y_index, folds):
        return sklearn_fold_scores(X, y_index, folds, settings, context)
    sizes = [s["batch_size"] for s in settings]
    jobs = min(context.n_jobs, len(sizes)) if X.size >= PARALLEL_MIN_VALUES else 1
    per_size = Parallel(n_jobs=jobs)(delayed(torch_fold_scores_of)(X, y_index, folds, b, context.seed, 1 if jobs > 1 else None)
                                     for b in sizes)
    return np.asarray(per_size).T


def _fit(model, X, y):
    return model.fit(X, y)


def refit(X, y, params: dict, settings, context):
    """The chosen network fitted on all rows; at :data:`PARALLEL_MIN_VALUES` and above, in one of the grid's
    worker processes (joblib keeps them), which have torch loaded already (about 2.5 s of imports saved)."""
    from joblib import Parallel, delayed

    from pintopic.classify.estimators import pipeline

    model = pipeline(build(params, context))
    if context.n_jobs < 2 or X.size < PARALLEL_MIN_VALUES:
        return model.fit(X, y)
    [fitted] = Parallel(n_jobs=context.n_jobs)([delayed(_fit)(model, X, y)])
    return fitted


def _restore(model, arrays: dict):
    from pintopic.classify.mlp_torch import set_fitted

    n_layers = sum(1 for key in arrays if key.startswith("coefs_"))
    return set_fitted(model, [arrays[f"coefs_{i}"] for i in range(n_layers)],
                      [arrays[f"intercepts_{i}"] for i in range(n_layers)], arrays["classes_"])


def _arrays(model) -> dict:
    arrays = {"classes_": model.classes_}
    for i, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_)):
        arrays[f"coefs_{i}"], arrays[f"intercepts_{i}"] = coef, intercept
    return arrays


def _mlp(**params):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(**params)


def _batched_mlp(**params):
    from pintopic.classify.mlp_torch import BatchedMLPClassifier

    return BatchedMLPClassifier(**params)


_PARAMS = ("hidden_layer_sizes", "activation", "solver", "learning_rate_init", "batch_size", "max_iter",
           "early_stopping", "validation_fraction", "n_iter_no_change", "random_state", "alpha")
SAVERS = {name: Saver(cls=cls, params=_PARAMS, arrays=_arrays, restore=_restore, list_params=("hidden_layer_sizes",))
          for name, cls in (("MLPClassifier", _mlp), ("BatchedMLPClassifier", _batched_mlp))}
