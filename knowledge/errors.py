"""Domain errors. The API maps them to 4xx responses and the CLI to clear messages."""


class DomainError(Exception):
    """Base class for errors caused by the caller, never by a bug."""


class NotFoundError(DomainError):
    """The named object does not exist (or is not visible to the caller)."""


class InvalidInputError(DomainError):
    """The input is malformed, empty or too large; nothing was changed."""


class VersionConflictError(InvalidInputError):
    """The object changed since the version the caller last saw; nothing was changed."""
