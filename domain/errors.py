"""Domain errors: raised by aggregates and policies, translated to HTTP by the edge."""


class DomainError(Exception):
    """Base class: a command was refused by a rule of the domain."""


class InvariantViolated(DomainError):
    """The command would break an aggregate's invariant."""


class NotFound(DomainError):
    """The thing the command names does not exist (or may not be seen by the caller)."""


class Conflict(DomainError):
    """The command conflicts with existing state (for example a duplicate email)."""


class Forbidden(DomainError):
    """The caller may see the thing but lacks the permission for the command."""


class InvalidArgument(DomainError):
    """The command itself is malformed (answered 400)."""

