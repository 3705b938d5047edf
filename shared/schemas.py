"""Request, response and spec schemas shared by the gateway (validation, the OpenAPI document, the web UI's
Generate form) and the services (contracts)."""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, WithJsonSchema

from shared.job_states import STATES

MAX_COUNT = 20          # the guide's contract: 1–20 images per request
MAX_SEED = 2**63 - 1  # stored as Postgres bigint; ComfyUI accepts up to 2**64-1, so every value fits
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# A checkpoint is a relative model path such as "Illustrious/model.safetensors": no absolute paths,
# no "..", no control characters. The known list (config or the GPU node) is checked by the presets
# service; this pattern only keeps obviously hostile strings out of logs and lookups.
CHECKPOINT_RE = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_.\- /]{1,200}$")
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
# Generated sizes: from MIN_DIMENSION up to the operator's max_dimension, in steps of DIMENSION_STEP.
MIN_DIMENSION = 64
DIMENSION_STEP = 8
# GenerateRequest's fields whose limit the operator sets (shared/config.py, max_prompt_chars and
# max_dimension): validation reads it from the validation context, the published schema from the settings.
PROMPT_FIELDS = ("extra_positive", "extra_negative")
DIMENSION_FIELDS = ("width", "height")


def _checkpoint_path(value: str) -> str:
    if not CHECKPOINT_RE.match(value):
        raise ValueError("must be a relative checkpoint path such as 'Illustrious/model.safetensors'")
    return value


# The pattern is published in the JSON schema but checked by the validator, whose message a user can act on.
CheckpointPath = Annotated[str, AfterValidator(_checkpoint_path),
                           WithJsonSchema({"type": "string", "pattern": CHECKPOINT_RE.pattern})]


class FieldError(ValueError):
    """Raised inside validators to name the offending field when pydantic's location would be empty."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


# The body of POST /api/v1/generate/{preset_slug}. The OpenAPI document and the web UI's Generate form are
# read off this model (`generate_request_schema`): a field's title is the form's label, its description the
# help text both show. Docstrings here are published as the schemas' descriptions: notes for readers of the
# code go in comments. The field order is the order in which validation finds the first error, which the
# API answers: keep it.
class GenerateRequest(BaseModel):
    """Strict: integers must be JSON integers (650.0, "650" and true are refused with 400 naming the field)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "dependentRequired": {"width": ["height"], "height": ["width"]}})   # as _both_dimensions checks

    count: int = Field(1, ge=1, le=MAX_COUNT, title="Images",
                       description=f"Number of images to generate (1–{MAX_COUNT})")
    checkpoint: Optional[CheckpointPath] = Field(
        None, title="Checkpoint",
        description='A checkpoint path to use instead of the preset\'s, e.g. "Illustrious/model.safetensors"')
    extra_positive: str = Field("", title="Extra positive", description="Appended to the preset's prompt")
    extra_negative: str = Field("", title="Extra negative", description="Appended to the preset's negative prompt")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, title="Seed",
                                description="Fixed seed for a reproducible image; else random")
    width: Optional[int] = Field(None, title="Width", description="Output width in pixels; give the height too")
    height: Optional[int] = Field(None, title="Height", description="Output height in pixels; give the width too")

    @field_validator(*PROMPT_FIELDS)
    @classmethod
    def _prompt_length(cls, value, info):
        limit = (info.context or {}).get("max_prompt_chars", 2000)
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        return value

    @field_validator(*DIMENSION_FIELDS)
    @classmethod
    def _dimension(cls, value, info):
        if value is None:
            return value
        limit = (info.context or {}).get("max_dimension", 2048)
        if not MIN_DIMENSION <= value <= limit:
            raise ValueError(f"must be between {MIN_DIMENSION} and {limit}")
        if value % DIMENSION_STEP:
            raise ValueError(f"must be a multiple of {DIMENSION_STEP}")
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


def generate_request_schema(settings, ref_template: str = DEFAULT_REF_TEMPLATE) -> dict:
    """GenerateRequest's JSON schema with the operator's limits (`settings`: shared/config.py's Settings).

    Pydantic sees the constraints declared with Field; the prompt and dimension limits are checked by the
    validators above, with the settings' values (validation context), so they are added here from the
    same settings and constants."""
    schema = GenerateRequest.model_json_schema(ref_template=ref_template)
    for name in PROMPT_FIELDS:
        value_schema(schema["properties"][name])["maxLength"] = settings.max_prompt_chars
    for name in DIMENSION_FIELDS:
        value_schema(schema["properties"][name]).update(
            minimum=MIN_DIMENSION, maximum=settings.max_dimension, multipleOf=DIMENSION_STEP)
    return schema


def value_schema(property_schema: dict) -> dict:
    """The schema a property's value has when given: an Optional field's non-null branch, else itself."""
    return next((branch for branch in property_schema.get("anyOf", ()) if branch.get("type") != "null"),
                property_schema)


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


# --- the API's answers (docs/gaze-rest-api-guide.md), as the OpenAPI document publishes them --------------
# The gateway builds these bodies as plain dicts (resources.py, errors.py, the jobs service's job
# document); these models describe them. Extra keys are allowed: a job carries bookkeeping of ours beside
# the guide's fields.

class Preset(BaseModel):
    """One preset in GET /api/v1/presets."""

    preset_id: str
    slug: str
    name: str
    has_cover: bool


class PresetList(BaseModel):
    """GET /api/v1/presets."""

    presets: list[Preset]


class QueuedJob(BaseModel):
    job_id: str = Field(pattern=UUID_PATTERN)
    status: Literal["queued"]


class Queued(BaseModel):
    """POST /api/v1/generate/{preset_slug}: the jobs queued, one per image."""

    jobs: list[QueuedJob] = Field(min_length=1, max_length=MAX_COUNT)


class Result(BaseModel):
    """A done job's image; fetch image_url (no API key needed)."""

    # shared/media.py's URL_PREFIX, which media cannot lend: it imports this module (a test holds them equal)
    image_url: str = Field(pattern="^/static/uploads/")
    relative_path: str
    seed: int


class Job(BaseModel):
    """GET /api/v1/job/{job_id}: `result` only when the job is done."""

    id: str = Field(pattern=UUID_PATTERN)
    label: str
    status: Literal[STATES]
    error: Optional[str]
    result: Optional[Result]


class Error(BaseModel):
    """Every error answer: `field` names the field at fault, when one is."""

    # services/gateway/errors.py builds it, and leaves `field` out when no field is to blame
    error: str
    field: Optional[str] = None
