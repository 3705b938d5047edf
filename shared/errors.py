"""Typed errors that cross the RPC boundary.

Registered with nameko's `deserialize_to_instance`, so a caller of `presets.resolve` gets a real `NotFound` /
`InvalidField` instance back instead of a generic RemoteError, and the gateway maps each to an HTTP
status in one table.
"""
from nameko.exceptions import deserialize_to_instance


@deserialize_to_instance
class NotFound(Exception):
    """The named thing (a preset slug, a job id) does not exist."""

    def __init__(self, kind, key):
        super().__init__(kind, key)
        self.kind = kind
        self.key = key

    def __str__(self):
        return f"{self.kind} not found: {self.key}"


class FieldProblem(Exception):
    """Base of the errors that blame one request field; `field` names it."""

    def __init__(self, field, message):
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self):
        return f"{self.field}: {self.message}"


@deserialize_to_instance
class InvalidField(FieldProblem):
    """A request field has a value the service cannot accept."""


@deserialize_to_instance
class Conflict(FieldProblem):
    """The request clashes with existing state (e.g. a slug already taken)."""


EXPECTED = (NotFound, InvalidField, Conflict)
