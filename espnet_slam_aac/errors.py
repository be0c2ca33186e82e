"""Exception types. Every message says what was wrong, where (file, line, key) and what to do about it."""


class SlamAACError(Exception):
    """Base class of the errors this package raises for bad input or setup."""


class DataError(SlamAACError):
    """A manifest, data dir or caption is malformed."""


class AudioError(DataError):
    """An audio file is missing, unreadable, empty or too short."""


class CheckpointError(SlamAACError):
    """A checkpoint is truncated, of the wrong architecture, or lacks keys."""


class ConfigError(SlamAACError):
    """A configuration value is missing or inconsistent."""


class MetricResourceError(SlamAACError):
    """A scoring metric lacks the jars or models it needs."""


class TrainingError(SlamAACError):
    """Training cannot go on: the loss stopped being finite, or no step could update the model."""
