"""Errors a user can fix: shown as one line, with a non-zero exit and no traceback."""


class NkdError(Exception):
  """A problem with the user's input or environment, explained in one line."""


class ConfigError(NkdError):
  """A flag or flagfile holds a value we cannot use."""


class DataError(NkdError):
  """A data file is missing, corrupt or of the wrong layout."""


class NonFiniteLossError(NkdError):
  """Training diverged; the last good checkpoint is kept."""


class DiskFullError(NkdError):
  """No space left while writing a file; the previous version of it is intact."""


def import_failure(error: ImportError, module: str) -> str:
  """Why `module` could not be imported, for a one-line message: "is not installed" when it is
  missing itself, otherwise the error it raised."""
  if getattr(error, "name", None) == module:
    return "is not installed"
  return f"cannot be imported ({type(error).__name__}: {error})"
