"""Errors a user can cause. Each message is one line: what was wrong and how to fix it."""


class SteerableError(Exception):
    """Base class; the CLI prints the message without a traceback and exits 2."""


class ConfigError(SteerableError, ValueError):
    """A parameter is out of its valid range."""


class ModelLoadError(SteerableError):
    """A model path or name cannot be loaded as a causal LM."""


class InputError(SteerableError, ValueError):
    """Prompts or data files are missing, empty or malformed."""


class IncompatibleArtifactError(SteerableError):
    """An artifact (vector, controller, reward head) belongs to another model."""
