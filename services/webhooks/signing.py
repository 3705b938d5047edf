"""Standard Webhooks (https://www.standardwebhooks.com): the secrets, the message and its signed headers.

A secret is `whsec_` + the base64 of 24 random bytes; the HMAC key is those bytes. A delivery is signed
with HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`, written `v1,<base64>`; several
signatures (the current secret's, and a rotated-out one's for its last 24 h) are separated by spaces.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone

PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(signing_secrets: list[str], message_id: str, timestamp: int, body: str) -> dict:
    """The headers of one attempt: the same id every time, this attempt's time, a signature per secret."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signature(secret, message_id, timestamp, body)
                                          for secret in signing_secrets),
            "Content-Type": "application/json"}


def body(event: str, job: dict, at: float) -> str:
    """The payload, serialised once and stored: every attempt sends (and signs) exactly these bytes."""
    timestamp = datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": f"job.{event}", "timestamp": timestamp, "data": job}, separators=(",", ":"))
