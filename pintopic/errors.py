"""Errors that the CLI prints as one line (no stack trace): the user can act on them."""


class PintopicError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""


class WeightsUnavailableError(PintopicError):
    """A backbone's pretrained weights are neither cached, given, nor downloadable."""


class AlignmentError(PintopicError):
    """Rows of two artefacts (features, split, labels) do not refer to the same image ids."""


class RunLockedError(PintopicError):
    """Another process holds the run folder."""
