"""User-facing errors: one clear line naming the file, line or field, never a traceback wall."""


class MalsoriError(Exception):
    """An error caused by the user's input (file, manifest line, config key); the CLI prints it as one line."""


class AudioError(MalsoriError):
    """An audio file is missing, empty, corrupt or unreadable."""


class ManifestError(MalsoriError):
    """A manifest line is malformed (bad JSON, missing field, wrong type)."""


class ConfigError(MalsoriError, ValueError):
    """A config key is unknown, or its value has the wrong type or lies outside the field's range (a ValueError too)."""


class EngineUnavailable(MalsoriError):
    """A synthesis engine's package or voice files are not installed; the message names the pip/npm command."""
