"""scikit-learn's ``MLPClassifier`` training rule (one ReLU hidden layer, Adam, early stopping) run for many
networks at once in PyTorch: the folds of a grid value train as one stack of networks, with batched matrix
products (``torch.baddbmm``) and one fused Adam step per mini-batch, where scikit-learn trains them one by one
with numpy.

Each network draws its initial weights, its early-stopping split and every epoch's shuffle from the same
``numpy.random.RandomState(random_state)`` calls as ``MLPClassifier.fit``, and follows the same rules (Glorot
initialisation, L2 penalty ``alpha`` in the gradient, Adam with bias correction, stop when the validation
accuracy has not improved by ``tol`` for more than ``n_iter_no_change`` epochs, keep the best epoch's
weights), so each one follows scikit-learn's trajectory up to float rounding. Fitted networks are plain
``MLPClassifier`` attributes (``coefs_``, ``intercepts_``), saved and predicted by scikit-learn's own code.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.neural_network import MLPClassifier


@dataclass(frozen=True)
class Rule:
    """The training rule of one grid value: MLPClassifier's parameters that the PyTorch path follows."""

    hidden: int = 256
    batch_size: int = 200
    learning_rate: float = 1e-3
    alpha: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    max_epochs: int = 200
    patience: int = 10
    tol: float = 1e-4
    validation_fraction: float = 0.1
    seed: int = 0
    #: "bfloat16": a training step's products round their float32 operands to bfloat16 inside oneDNN and sum in
    #: float32 (weights, gradients and Adam stay float32); "float32"; "auto": bfloat16 where the CPU multiplies it
    #: natively
    matmul: str = "auto"


@dataclass
class _Network:
    """One network's data and state: rows (indices into X), its early-stopping split, its best epoch so far."""

    rows: np.ndarray
    labels: np.ndarray
    train: np.ndarray  # positions in rows
    val: np.ndarray
    rng: np.random.RandomState
    weights: list  # W1 (D, H), b1 (H,), W2 (H, K), b2 (K,) as float32 arrays
    order: np.ndarray = None
    best_score: float = -np.inf
    best: list = None
    scores: list = field(default_factory=list)
    stale: int = 0
    epochs: int = 0


def supported(estimator, y) -> bool:
    """Whether :func:`train_networks` reproduces this MLPClassifier's fit (else scikit-learn fits it)."""
    sizes = estimator.hidden_layer_sizes
    sizes = [sizes] if np.isscalar(sizes) else list(sizes)
    n_classes = len(np.unique(np.asarray(y)))  # two classes: a single logistic output, left to scikit-learn
    return (estimator.solver == "adam" and estimator.activation == "relu" and estimator.early_stopping
            and estimator.shuffle and len(sizes) == 1 and isinstance(estimator.random_state, (int, np.integer))
            and estimator.batch_size != "auto" and n_classes >= 3
            and int(np.ceil(estimator.validation_fraction * len(y))) >= 2)


def early_stopping_possible(n_samples: int, n_classes: int, fraction: float) -> bool:
    """Enough rows for a validation part of ``fraction`` to hold every class at least once, and the rest too."""
    return int(np.ceil(fraction * n_samples)) >= n_classes and n_samples - n_classes >= n_classes


def _network(X, y_index, rows, n_classes: int, rule: Rule) -> _Network:
    """Initial weights and the early-stopping split, from MLPClassifier's own sequence of RandomState calls."""
    from sklearn.model_selection import train_test_split

    rng = np.random.RandomState(rule.seed)
    weights = []
    for fan_in, fan_out in ((X.shape[1], rule.hidden), (rule.hidden, n_classes)):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    labels = y_index[rows]
    # MLPClassifier stratifies only single-output targets: a multiclass split is a plain shuffled one
    train, val = train_test_split(np.arange(len(rows)), random_state=rng, test_size=rule.validation_fraction)
    return _Network(np.asarray(rows), labels, train, val, rng, weights, order=np.arange(len(train)))


def _epoch_plan(networks: list[_Network], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Every network's shuffled mini-batches of this epoch as global row indices ``(steps, nets, batch)`` (padded)
    and the real rows per step and network ``(steps, nets)``; each shuffle is MLPClassifier's."""
    from sklearn.utils import shuffle

    steps = max(-(-len(net.train) // batch) for net in networks)
    index = np.zeros((steps, len(networks), batch), dtype=np.int64)
    counts = np.zeros((steps, len(networks)), dtype=np.int64)
    for m, net in enumerate(networks):
        net.order = shuffle(net.order, random_state=net.rng)
        rows = net.rows[net.train[net.order]]
        for s, start in enumerate(range(0, len(rows), batch)):
            chunk = rows[start:start + batch]
            index[s, m, :len(chunk)] = chunk
            counts[s, m] = len(chunk)
    return index, counts


class _Stack:
    """The parameters of the networks still training, stacked, with their Adam moments (one fused step for all)."""

    def __init__(self, networks: list[_Network], rule: Rule, scaling):
        import torch

        self.networks, self.rule = networks, rule
        self.params = [torch.from_numpy(np.stack([net.weights[i] for net in networks])) for i in range(4)]
        self.moments = [[torch.zeros_like(p) for p in self.params] for _ in range(2)]
        self.mean, self.scale = scaling
        self.steps = 0

    def keep(self, indices: list[int]) -> None:
        """Drop the networks that stopped: later steps compute only the others."""
        import torch

        index = torch.as_tensor(indices, dtype=torch.long)
        self.params, *self.moments = [[p.index_select(0, index) for p in group]
                                      for group in (self.params, *self.moments)]
        if self.mean is not None:
            self.mean, self.scale = self.mean.index_select(0, index), self.scale.index_select(0, index)
        self.networks = [self.networks[i] for i in indices]

    def inputs(self, X, rows):
        """Rows of X for each network ``(nets, n, D)``, standardised with each network's own scaler."""
        batch = X.index_select(0, rows.reshape(-1)).view(len(self.networks), -1, X.shape[1])
        if self.mean is not None:
            batch = batch.sub_(self.mean.unsqueeze(1)).div_(self.scale.unsqueeze(1))
        return batch

    def step(self, X, one_hot, index, counts) -> None:
        """One Adam step of every network on its mini-batch (MLPClassifier's ``_backprop`` and ``AdamOptimizer``).

        The error is divided by the batch size before it is propagated (the same gradient as dividing each
        product), and the L2 term ``alpha * W / batch`` is Adam's weight decay, so no pass over the weights is added.
        """
        import torch

        W1, b1, W2, b2 = self.params
        rows = torch.from_numpy(index).reshape(-1)
        inputs = self.inputs(X, rows)
        hidden = torch.baddbmm(b1.unsqueeze(1), inputs, W1).clamp_min_(0)
        delta = torch.softmax(torch.baddbmm(b2.unsqueeze(1), hidden, W2), dim=2)
        delta.sub_(one_hot.index_select(0, rows).view_as(delta))
        batch = index.shape[1]
        full = bool((counts == batch).all())
        if full:
            delta.div_(batch)
        else:  # a short last batch: padded rows add nothing, each network divides by its own count
            size = np.maximum(counts, 1).astype(np.float32)
            weight = (np.arange(batch)[None, :] < counts[:, None]) / size[:, None]
            delta.mul_(torch.from_numpy(weight.astype(np.float32)).unsqueeze(2))
        back = torch.bmm(delta, W2.transpose(1, 2)).mul_(hidden > 0)
        grads = [torch.bmm(inputs.transpose(1, 2), back), back.sum(1), torch.bmm(hidden.transpose(1, 2), delta),
                 delta.sum(1)]
        decay = self.rule.alpha / batch
        if not full:
            decay = 0.0
            penalty = torch.from_numpy(self.rule.alpha / size).view(-1, 1, 1)
            grads[0].addcmul_(W1, penalty)
            grads[2].addcmul_(W2, penalty)
        idle = [m for m in range(len(counts)) if counts[m] == 0]
        saved = [[tensor[idle].clone() for tensor in group] for group in (self.params, *self.moments)] if idle else None
        self._adam(grads, decay)
        if idle:  # a network with no batch left this epoch takes no step
            for group, values in zip((self.params, *self.moments), saved):
                for tensor, value in zip(group, values):
                    tensor[idle] = value

    def _adam(self, grads: list, decay: float) -> None:
        """One Adam step of the stack: torch's fused kernel, what ``torch.optim.Adam(fused=True)`` runs, called
        directly, as the Optimizer wrapper imports torch._dynamo (1.2 s in each worker process) and adds Python
        time to every step. Weights take the L2 term as weight decay, intercepts none."""
        import torch

        rule = self.rule
        self.steps += 1
        # scikit-learn adds epsilon to sqrt(v) before the bias correction, torch after it
        eps = rule.epsilon / np.sqrt(1 - rule.beta_2 ** self.steps)
        step = torch.tensor(float(self.steps))
        first, second = self.moments
        for part, weight_decay in (((0, 2), decay), ((1, 3), 0.0)):
            torch._fused_adam_([self.params[i] for i in part], [grads[i] for i in part], [first[i] for i in part],
                               [second[i] for i in part], [], [step] * len(part), lr=rule.learning_rate,
                               beta1=rule.beta_1, beta2=rule.beta_2, weight_decay=weight_decay, eps=eps,
                               amsgrad=False, maximize=False)

    def validation_scores(self, X) -> list[float]:
        """Accuracy of each network on its own early-stopping rows (MLPClassifier's ``_score``)."""
        import torch

        scores = []
        W1, b1, W2, b2 = self.params
        for m, net in enumerate(self.networks):
            rows = torch.from_numpy(net.rows[net.val])
            inputs = X.index_select(0, rows)
            if self.mean is not None:
                inputs = inputs.sub_(self.mean[m]).div_(self.scale[m])
            logits = torch.addmm(b2[m], torch.addmm(b1[m], inputs, W1[m]).clamp_min_(0), W2[m])
            scores.append(float((logits.argmax(1).numpy() == net.labels[net.val]).mean()))
        return scores

    def end_epoch(self, X) -> None:
        """Score every network, keep its best weights, drop those whose patience ran out (or that hit max_epochs)."""
        rule = self.rule
        keep = []
        for m, (net, score) in enumerate(zip(self.networks, self.validation_scores(X))):
            net.epochs += 1
            net.scores.append(score)
            net.stale = net.stale + 1 if score < net.best_score + rule.tol else 0
            if score > net.best_score:
                net.best_score = score
                net.best = [p[m].numpy().copy() for p in self.params]
            if net.stale <= rule.patience and net.epochs < rule.max_epochs:
                keep.append(m)
        if len(keep) < len(self.networks):
            self.keep(keep)


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where it is 3-4x float32's speed."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextmanager
def matmul_precision(matmul: str):
    """Within it, float32 products run in bfloat16 with float32 sums (oneDNN's fpmath mode) if ``matmul`` is
    "bfloat16": the operands are rounded as the kernel packs them, so no converted copy of the weights or the
    gradient is written (on AMX, 1.2x the step of explicit bfloat16 copies, 1.1x float32). The setting is
    torch's, process-wide: it is restored on the way out."""
    import torch

    if matmul != "bfloat16":
        yield
        return
    settings = torch.backends.mkldnn.matmul
    previous = settings.fp32_precision
    settings.fp32_precision = "bf16"
    try:
        yield
    finally:
        settings.fp32_precision = previous


def _scalers(X, row_sets, chunk: int = 4096):
    """Per row set, StandardScaler's mean and scale (float64 statistics in two passes over row chunks, zero
    variance -> scale 1), as float32 tensors."""
    import torch

    means, scales = [], []
    for rows in row_sets:
        chunks = [rows[start:start + chunk] for start in range(0, len(rows), chunk)]
        mean = sum(X[part].sum(axis=0, dtype=np.float64) for part in chunks) / len(rows)
        variance = sum(np.square(X[part] - mean).sum(axis=0) for part in chunks) / len(rows)
        scale = np.sqrt(variance)
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
        means.append(mean.astype(np.float32))
        scales.append(scale.astype(np.float32))
    return torch.from_numpy(np.stack(means)), torch.from_numpy(np.stack(scales))


def train_networks(X, y_index, row_sets, rule: Rule, *, n_classes: int, standardize: bool = True,
                   threads: int | None = None) -> list[dict]:
    """Train one network per row set (indices into ``X``) under ``rule``, all at once.

    With ``standardize``, each network sees its rows standardised by their own StandardScaler statistics (the
    pipeline's first step, fitted on that fold), without a standardised copy of ``X`` per fold. Returns per
    network ``coefs``, ``intercepts`` (its best epoch's, as MLPClassifier keeps), ``n_iter``,
    ``validation_scores``, ``best_validation_score`` and ``scaler`` (its ``(mean, scale)`` with ``standardize``).
    """
    import torch

    from pintopic.environment import usable_cores

    X = np.ascontiguousarray(X, dtype=np.float32)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or usable_cores())
    try:
        with torch.no_grad():
            with warnings.catch_warnings():  # joblib's read-only memory map: the stack never writes to it
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                features = torch.from_numpy(X)
            one_hot = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(y_index, dtype=np.int64)), n_classes).float()
            if rule.matmul == "auto":
                rule = replace(rule, matmul="bfloat16" if native_bfloat16() else "float32")
            networks = [_network(X, np.asarray(y_index), rows, n_classes, rule) for rows in row_sets]
            batch = max(1, min(rule.batch_size, min(len(net.train) for net in networks)))
            scaling = _scalers(X, [net.rows for net in networks]) if standardize else (None, None)
            stack = _Stack(list(networks), rule, scaling)
            while stack.networks:
                index, counts = _epoch_plan(stack.networks, batch)
                with matmul_precision(rule.matmul):
                    for s in range(len(index)):
                        stack.step(features, one_hot, index[s], counts[s])
                stack.end_epoch(features)
    finally:
        torch.set_num_threads(previous)
    return [{"coefs": [net.best[0], net.best[2]], "intercepts": [net.best[1], net.best[3]], "n_iter": net.epochs,
             "validation_scores": net.scores, "best_validation_score": net.best_score,
             "scaler": None if scaling[0] is None else (scaling[0][m].numpy(), scaling[1][m].numpy())}
            for m, net in enumerate(networks)]


def rule_of(estimator) -> Rule:
    """The :class:`Rule` of an MLPClassifier's parameters."""
    sizes = estimator.hidden_layer_sizes
    return Rule(hidden=int(sizes if np.isscalar(sizes) else sizes[0]), batch_size=int(estimator.batch_size),
                learning_rate=float(estimator.learning_rate_init), alpha=float(estimator.alpha),
                beta_1=float(estimator.beta_1), beta_2=float(estimator.beta_2), epsilon=float(estimator.epsilon),
                max_epochs=int(estimator.max_iter), patience=int(estimator.n_iter_no_change), tol=float(estimator.tol),
                validation_fraction=float(estimator.validation_fraction), seed=int(estimator.random_state))


def set_fitted(model, coefs, intercepts, classes):
    """Give an MLPClassifier the fitted attributes its predict needs (the softmax output of a multiclass fit)."""
    from sklearn.preprocessing import LabelBinarizer

    model.coefs_, model.intercepts_ = list(coefs), list(intercepts)
    model.n_layers_ = len(model.coefs_) + 1
    model.n_outputs_ = model.coefs_[-1].shape[1]
    model.out_activation_ = "softmax" if model.n_outputs_ > 1 else "logistic"
    model.n_features_in_ = model.coefs_[0].shape[0]
    model._label_binarizer = LabelBinarizer().fit(classes)
    model.classes_ = model._label_binarizer.classes_
    return model


class BatchedMLPClassifier(MLPClassifier):
    """``MLPClassifier`` whose ``fit`` trains with :func:`train_networks` (PyTorch) where that reproduces its rule,
    and with scikit-learn's own solver otherwise (e.g. two classes, or too few rows for early stopping)."""

    def fit(self, X, y):
        self._validate_params()
        y = np.asarray(y)
        if not supported(self, y):
            return super().fit(X, y)
        classes, y_index = np.unique(y, return_inverse=True)
        [net] = train_networks(np.asarray(X), y_index, [np.arange(len(y))], rule_of(self), n_classes=len(classes),
                               standardize=False)
        set_fitted(self, net["coefs"], net["intercepts"], classes)
        self.n_iter_, self.validation_scores_ = net["n_iter"], net["validation_scores"]
        self.best_validation_score_ = net["best_validation_score"]
        return self
