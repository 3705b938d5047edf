"""Request and spec schemas shared by the gateway (validation) and the services (contracts)."""
from __future__ import annotations

import re
from typing import Annotated, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_COUNT = 20          # the guide's contract: 1–20 images per request
MAX_SEED = 2**63 - 1  # stored as Postgres bigint; ComfyUI accepts up to 2**64-1, so every value fits
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# A checkpoint is a relative model path such as "Illustrious/model.safetensors": no absolute paths,
# no "..", no control characters. The known list (config or the GPU node) is checked by the presets
# service; this pattern only keeps obviously hostile strings out of logs and lookups.
CHECKPOINT_RE = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_.\- /]{1,200}$")


def _checkpoint_path(value: str) -> str:
    if not CHECKPOINT_RE.match(value):
        raise ValueError("must be a relative checkpoint path such as 'Illustrious/model.safetensors'")
    return value


CheckpointPath = Annotated[str, AfterValidator(_checkpoint_path)]


class FieldError(ValueError):
    """Raised inside validators to name the offending field when pydantic's location would be empty."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


class GenerateRequest(BaseModel):
    """Body of POST /api/v1/generate/<slug>. Strict: "3", 2.5 and true are not integers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    count: int = Field(1, ge=1, le=MAX_COUNT)
    checkpoint: Optional[CheckpointPath] = None
    extra_positive: str = ""
    extra_negative: str = ""
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    width: Optional[int] = None
    height: Optional[int] = None

    @field_validator("extra_positive", "extra_negative")
    @classmethod
    def _prompt_length(cls, value, info):
        limit = (info.context or {}).get("max_prompt_chars", 2000)
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        return value

    @field_validator("width", "height")
    @classmethod
    def _dimension(cls, value, info):
        if value is None:
            return value
        limit = (info.context or {}).get("max_dimension", 2048)
        if not 64 <= value <= limit:
            raise ValueError(f"must be between 64 and {limit}")
        if value % 8:
            raise ValueError("must be a multiple of 8")
        return value

    @model_validator(mode="after")
    def _both_dimensions(self):
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise FieldError(missing, "width and height must be given together")
        return self

    def overrides(self) -> dict:
        """The fields the caller actually set, minus `count` (which is not part of a spec)."""
        return self.model_dump(exclude_unset=True, exclude={"count"})


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) for the first problem pydantic found, in words a user can act on."""
    err = exc.errors()[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, FieldError):
        return original.field, original.message
    field = ".".join(str(part) for part in err["loc"]) or "body"
    kind = err["type"]
    if kind == "extra_forbidden":
        return field, "unknown field"
    if kind.startswith("int") or kind == "int_type":
        return field, "must be an integer" if kind == "int_type" else _bound_message(err)
    if kind in ("greater_than_equal", "less_than_equal"):
        return field, _bound_message(err)
    if kind == "string_type":
        return field, "must be a string"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return field, message


def _bound_message(err):
    ctx = err.get("ctx") or {}
    if "ge" in ctx:
        return f"must be at least {ctx['ge']}"
    if "le" in ctx:
        return f"must be at most {ctx['le']}"
    return err["msg"]


class GenerationSpec(BaseModel):
    """Everything a generator needs for one image; the presets service builds it, jobs stores it."""

    preset_slug: str
    preset_name: str
    prompt: str
    negative: str
    checkpoint: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seed: Optional[int] = None
    kind: str = "preview"

    def label(self) -> str:
        return f"Preset: {self.preset_name} – {self.kind}"


class PresetFields(BaseModel):
    """A preset as created or edited (by the web UI or an import); the slug is its permanent id."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_RE.pattern)
    name: str = Field(min_length=1, max_length=200)
    prompt: str = Field("", max_length=4000)
    negative: str = Field("", max_length=4000)
    checkpoint: CheckpointPath
    width: int = Field(1024, ge=64, le=8192, multiple_of=8)
    height: int = Field(1024, ge=64, le=8192, multiple_of=8)
    steps: int = Field(28, ge=1, le=200)
    cfg: float = Field(6.0, ge=0, le=40)
    sampler: str = Field("euler_ancestral", pattern=r"^[a-z0-9_]{1,64}$")

