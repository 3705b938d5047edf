"""The `Prefer` request header (RFC 7240) as far as GAZE honours it: `wait=N`.

RFC 7240: a preference the server does not understand, or a malformed value, is ignored, never an error;
the first occurrence of a preference wins; names are case-insensitive; a value is a token or a quoted
string. GAZE holds an answer for at most MAX_WAIT_SECONDS (Replicate's limit): a longer wait is honoured
as that much, and `Preference-Applied` says how much was applied.
"""
from __future__ import annotations

MAX_WAIT_SECONDS = 60


def _preferences(values):
    """(name, value or None) of each preference in the header values, in order (parameters dropped)."""
    for value in values:
        for preference in _split(value, ","):
            head = _split(preference, ";")[0].strip()
            name, sep, raw = head.partition("=")
            name, raw = name.strip().lower(), raw.strip()
            if sep and len(raw) >= 2 and raw[0] == raw[-1] == '"':
                raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            if name:
                yield name, (raw if sep else None)


def _split(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside quoted strings."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def wait_seconds(values) -> int | None:
    """The seconds a request asks to be held (1..MAX_WAIT_SECONDS) from its `Prefer` header values, or
    None: no `wait` preference, or one whose value is not a positive whole number of seconds."""
    for name, raw in _preferences(values):
        if name != "wait":
            continue
        if raw is None or not raw.isascii() or not raw.isdigit():
            return None
        seconds = int(raw)
        return min(seconds, MAX_WAIT_SECONDS) if seconds > 0 else None
    return None


def applied(seconds: int) -> str:
    """The `Preference-Applied` header's value for a wait of `seconds`."""
    return f"wait={seconds}"
