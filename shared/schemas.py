"""Request, response and spec schemas shared by the gateway (validation, the OpenAPI document, the web UI's
Generate form) and the services (contracts)."""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, WithJsonSchema

from shared.contracts.webhooks import DEFAULT_EVENTS as DEFAULT_WEBHOOK_EVENTS
from shared.contracts.webhooks import EVENTS as WEBHOOK_EVENTS
from shared.contracts.webhooks import MAX_URL_CHARS, url_problem
from shared.job_states import STATES, TERMINAL

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
# GenerateRequest's fields that say what to do with the jobs, not how to generate them
NOT_OVERRIDES = {"count", "webhook", "webhook_events_filter"}


def _checkpoint_path(value: str) -> str:
    if not CHECKPOINT_RE.match(value):
        raise ValueError("must be a relative checkpoint path such as 'Illustrious/model.safetensors'")
    return value


# The pattern is published in the JSON schema but checked by the validator, whose message a user can act on.
CheckpointPath = Annotated[str, AfterValidator(_checkpoint_path),
                           WithJsonSchema({"type": "string", "pattern": CHECKPOINT_RE.pattern})]


def _storable_text(value: str) -> str:
    # PostgreSQL's text cannot hold NUL, and UTF-8 cannot carry an unpaired surrogate ("\ud800" in JSON):
    # refused here, naming the field, rather than failing in the database (a 500). Never stripped: the
    # text is part of what reproduces an image.
    if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("must not contain NUL (\\u0000) or unpaired surrogate (\\ud800-\\udfff) characters")
    return value


# Any free text a client sends that is stored or passed on as text.
StoredText = Annotated[str, AfterValidator(_storable_text)]


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
    extra_positive: StoredText = Field("", title="Extra positive", description="Appended to the preset's prompt")
    extra_negative: StoredText = Field("", title="Extra negative", description="Appended to the preset's negative prompt")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, title="Seed",
                                description="Fixed seed for a reproducible image (with count > 1, the i-th job"
                                            " of the batch gets seed + i); else random")
    width: Optional[int] = Field(None, title="Width", description="Output width in pixels; give the height too")
    height: Optional[int] = Field(None, title="Height", description="Output height in pixels; give the width too")
    # additions beyond the guide (docs/gaze-rest-api-guide.md, "Additions"); not generation settings, so
    # neither in `overrides` nor on the web UI's Generate form (services/gateway/web/presets.py)
    webhook: Optional[StoredText] = Field(None, max_length=MAX_URL_CHARS, title="Webhook", description=(
        "An http(s) URL that is sent each job's events (Standard Webhooks, signed with the API key's secret)"))
    webhook_events_filter: list[Literal[WEBHOOK_EVENTS]] = Field(
        list(DEFAULT_WEBHOOK_EVENTS), title="Webhook events",
        description="Which events of each job the webhook is sent")

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value):
        problem = None if value is None else url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

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

    @model_validator(mode="after")
    def _batch_seeds_fit(self):
        # job i of a batch gets seed + i (AUTOMATIC1111's convention): the last one must still be a seed
        if self.seed is not None and self.seed + self.count - 1 > MAX_SEED:
            raise FieldError("seed", f"with count {self.count}, seed + count - 1 must be at most {MAX_SEED}")
        return self

    def webhook_events(self) -> list[str]:
        """The filter without repeats, in EVENTS' order."""
        return [event for event in WEBHOOK_EVENTS if event in self.webhook_events_filter]

    def overrides(self) -> dict:
        """The fields the caller actually set, minus those that are not part of a spec."""
        return self.model_dump(exclude_unset=True, exclude=NOT_OVERRIDES)


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
    name: StoredText = Field(min_length=1, max_length=200)
    prompt: StoredText = Field("", max_length=4000)
    negative: StoredText = Field("", max_length=4000)
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


class Progress(BaseModel):
    """Steps done of the job's steps."""

    value: int
    max: int


class Job(BaseModel):
    """GET /api/v1/job/{job_id}: `result` only when the job is done."""

    id: str = Field(pattern=UUID_PATTERN)
    label: str
    status: Literal[STATES]
    error: Optional[str]
    result: Optional[Result]
    # additions beyond the guide (docs/gaze-rest-api-guide.md, "Additions")
    queue_position: Optional[int] = Field(None, ge=0, description=(
        "While pending: the 0-based place among the jobs waiting for a generator (0 once reserved); else null"))
    progress: Optional[Progress] = None


class JobPage(BaseModel):
    """GET /api/v1/jobs: the calling key's jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    jobs: list[Job]
    next_cursor: Optional[str]


class Cancelled(BaseModel):
    """POST /api/v1/job/{job_id}/cancel: the job is cancelled."""

    id: str = Field(pattern=UUID_PATTERN)
    status: Literal["cancelled"]


class AlreadyEnded(BaseModel):
    """POST /api/v1/job/{job_id}/cancel of a job that had ended: nothing changed."""

    error: str
    status: Literal[tuple(sorted(TERMINAL))]


class Error(BaseModel):
    """Every error answer: `field` names the field at fault, when one is."""

    # services/gateway/errors.py builds it, and leaves `field` out when no field is to blame
    error: str
    field: Optional[str] = None
