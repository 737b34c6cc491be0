"""The standardisation every classifier pipeline starts with, and the per-fold version the grid searches use."""
from __future__ import annotations

import numpy as np

from pintopic.classify.saver import Saver


def scaled_fold(X, train, val):
    """A fold's training and validation rows, standardised with statistics of the training rows only."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X[train])
    return scaler.transform(X[train]), scaler.transform(X[val])


def _restore(scaler, arrays: dict):
    seen = arrays["n_samples_seen_"]
    scaler.mean_, scaler.scale_, scaler.var_ = arrays["mean_"], arrays["scale_"], arrays["var_"]
    scaler.n_samples_seen_ = seen.item() if seen.ndim == 0 else seen
    scaler.n_features_in_ = len(arrays["mean_"])
    return scaler


def _scaler_class():
    from sklearn.preprocessing import StandardScaler

    return StandardScaler


SAVERS = {"StandardScaler": Saver(
    cls=lambda **params: _scaler_class()(**params), params=("with_mean", "with_std"),
    arrays=lambda s: {"mean_": s.mean_, "scale_": s.scale_, "var_": s.var_, "n_samples_seen_": np.asarray(s.n_samples_seen_)},
    restore=_restore)}
