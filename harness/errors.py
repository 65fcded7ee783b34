"""User-facing errors.

A :class:`HarnessError` is a mistake a user can fix (a wrong path, an unknown name, a malformed
file). The command-line entry points print its message alone, without a traceback, and exit
with status 2. Anything else is a bug and keeps its traceback.
"""


class HarnessError(Exception):
    """An error caused by user input; its message says what is wrong and how to fix it."""


class MissingWeightsError(HarnessError):
    """Model weights (or another large file) are not available locally."""


class DataError(HarnessError):
    """A data file (prompts, captions, annotations, images) is missing or malformed."""


class ConfigError(HarnessError):
    """A configuration value is invalid in a way the schema cannot express."""


class BaselineUnavailableError(HarnessError):
    """An optional baseline whose dependency is not installed; a run leaves it out with a note."""
