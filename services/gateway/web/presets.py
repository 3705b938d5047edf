"""The preset pages: one preset with its settings, Generate form, live batch and gallery; create, edit
and delete; import and export as JSON.

Generation goes through `generation.submit`, the same path as POST /api/v1/generate/<slug>: the form's
strings are only turned into the guide's JSON types here, never validated twice. The Generate form itself
(its fields, their order, controls, limits, labels and help) is read off the request's model,
GenerateRequest, through the JSON schema the OpenAPI document publishes. Preset fields are
validated by the presets service (PresetFields); its InvalidField / Conflict name the field. A refused
form shows every field's problem at once, next to each field and listed above the form, with the user's
input kept: the input is validated again with the same model and put into words by form_errors.py.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import falcon

from shared.errors import Conflict, InvalidField
from shared.schemas import MAX_COUNT, GenerateRequest, PresetFields, generate_request_schema, value_schema
from services.gateway import generation, validation
from services.gateway.errors import ApiError
from services.gateway.web.form_errors import form_errors, with_label
from services.gateway.web.render import form_values, redirect, render
from shared.contracts.jobs import JobsClient
from shared.contracts.presets import PresetsClient

PRESET_KEYS = tuple(PresetFields.model_fields)
PRESET_SCHEMA = PresetFields.model_json_schema()
# The preset form's labels: the fields' titles, but for two the form words differently.
PRESET_LABELS = {**{name: prop["title"] for name, prop in PRESET_SCHEMA["properties"].items()},
                 "negative": "Negative prompt", "cfg": "CFG"}
# Marked required on the form (and `required`): the fields PresetFields has no default for.
PRESET_REQUIRED = frozenset(name for name, info in PresetFields.model_fields.items() if info.is_required())
# What an empty Generate field means, shown as its placeholder: besides this, the preset's own setting.
EMPTY_MEANS = {"seed": "random"}
GALLERY_PAGE = 60
# /presets/new and /presets/import are UI routes, so a preset with such a slug could never be opened.
RESERVED_SLUGS = frozenset({"new", "import"})
MAX_IMPORT_BYTES = 1024 * 1024
MAX_IMPORT_PRESETS = 500
# Keys our own outputs (presets.get, the API's list) carry that are not preset fields: an import of
# such an object ignores them instead of calling the whole preset invalid.
IGNORED_IMPORT_KEYS = frozenset({"preset_id", "has_cover", "cover_path"})
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral",
            "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "uni_pc", "lcm")

_INT = re.compile(r"-?\d{1,40}")
_DECIMAL = re.compile(r"-?(\d{1,20}(\.\d{0,20})?|\.\d{1,20})")


# --- form strings -> JSON types ---------------------------------------------------------------------
def as_int(text: str):
    """Digits become an int; anything else stays the string it was, so validation names the field."""
    stripped = text.strip()
    return int(stripped) if _INT.fullmatch(stripped) else text


def as_float(text: str):
    stripped = text.strip()
    return float(stripped) if _DECIMAL.fullmatch(stripped) else text


# --- the Generate form, read off GenerateRequest ------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    """One control of the Generate form: a property of GenerateRequest's JSON schema."""

    name: str
    label: str        # the field's title
    help: str         # its description
    kind: str         # "number" (an input), "text" (a one-line input) or "textarea"
    attrs: dict       # the schema's constraints as HTML attributes, so the browser checks them first
    default: str      # the model's default as the form shows it; "" where empty means the preset's own


# The request's fields a person in the web UI does not set: a webhook is for API clients (and signed with
# an API key's secret, which a web UI job has none of).
NOT_ON_THE_FORM = ("webhook", "webhook_events_filter")


def generate_form(settings) -> tuple[FormField, ...]:
    """The Generate form's fields, in the model's order, with the limits of `settings` (as validated)."""
    schema = generate_request_schema(settings)
    return tuple(_form_field(name, prop) for name, prop in schema["properties"].items()
                 if name not in NOT_ON_THE_FORM)


def _form_field(name: str, prop: dict) -> FormField:
    value = value_schema(prop)
    if value.get("type") == "integer":
        kind = "number"
        attrs = {"min": value.get("minimum"), "max": value.get("maximum"), "step": value.get("multipleOf", 1),
                 "inputmode": "numeric"}
    elif value.get("type") == "string":
        # free text (a prompt) gets room to write; a constrained string (a path, a name) one line
        kind = "text" if "pattern" in value else "textarea"
        attrs = {"maxlength": value.get("maxLength")}
    else:
        raise TypeError(f"the Generate form has no control for {name!r}: {prop}")
    default = prop.get("default")
    return FormField(name=name, label=prop.get("title", name), help=prop.get("description", ""), kind=kind,
                     attrs={key: val for key, val in attrs.items() if val is not None},
                     default="" if default is None else str(default))


def form_rows(fields) -> list[list[FormField]]:
    """The form's layout: consecutive one-line controls share a row; a textarea has a row of its own."""
    rows = []
    for field in fields:
        if field.kind != "textarea" and rows and rows[-1][-1].kind != "textarea":
            rows[-1].append(field)
        else:
            rows.append([field])
    return rows


def generate_body(form: dict, fields) -> dict:
    """The Generate form as the guide's request body. Empty fields are omitted (the preset's own setting);
    the checkpoint select's default option is empty too, so "the preset's own" is never sent as an
    override. A textarea's text is sent as typed; a one-line value is trimmed."""
    body = {}
    for field in fields:
        raw = form.get(field.name, "")
        if not raw.strip():
            continue
        if field.kind == "number":
            body[field.name] = as_int(raw)
        else:
            body[field.name] = raw if field.kind == "textarea" else raw.strip()
    return body


def preset_fields(form: dict, with_slug: bool) -> dict:
    """The preset form as PresetFields input. Texts are sent as typed (an emptied prompt is a change);
    empty numbers are omitted (create: the default; edit: unchanged)."""
    fields = {}
    names = PRESET_KEYS if with_slug else tuple(k for k in PRESET_KEYS if k != "slug")
    for name in names:
        raw = form.get(name, "")
        if name in ("width", "height", "steps"):
            if raw.strip():
                fields[name] = as_int(raw)
        elif name == "cfg":
            if raw.strip():
                fields[name] = as_float(raw)
        elif name in ("prompt", "negative"):
            fields[name] = raw
        else:
            fields[name] = raw.strip()
    return fields


def clean_cfg(value):
    """cfg is stored as a 4-byte real: 6.1 comes back as 6.099999904632568. Show and export 6.1."""
    return float(f"{float(value):.6g}") if isinstance(value, (int, float)) else value


def export_shape(preset: dict) -> dict:
    shaped = {key: preset[key] for key in PRESET_KEYS}
    shaped["cfg"] = clean_cfg(shaped["cfg"])
    return shaped


def preset_errors(fields: dict, exc=None) -> dict:
    """Every problem of a preset's `fields` in words ({field: message}), with the error `exc` a service
    raised for a reason the model cannot see (a taken or reserved slug) added under its field."""
    errors = form_errors(PresetFields, fields, PRESET_SCHEMA, PRESET_LABELS)
    if exc is not None:
        field, message = field_message(exc)
        errors.setdefault(field, with_label(field, message, PRESET_SCHEMA, PRESET_LABELS))
    return errors


def field_message(exc) -> tuple[str, str]:
    """(field, message) of a field error, without the "field: " prefix the API puts in its message."""
    if isinstance(exc, (InvalidField, Conflict)):
        return exc.field, exc.message
    field = getattr(exc, "field", None) or "form"
    message = exc.description or exc.title or "invalid value"
    if message.startswith(f"{field}: "):
        message = message[len(field) + 2:]
    return field, message


def own_image(slug: str, relative_path) -> str:
    """A relative path of one of this preset's images (presets/<slug>/...), or a 400 naming the field."""
    prefix = f"presets/{slug}/"
    if (not isinstance(relative_path, str) or not relative_path.startswith(prefix)
            or len(relative_path) > 500 or len(relative_path) == len(prefix)
            or ".." in relative_path.split("/") or "\\" in relative_path or "//" in relative_path
            or any(ord(ch) < 32 for ch in relative_path)):
        raise ApiError(falcon.HTTP_400, "relative_path: not an image of this preset", "relative_path")
    return relative_path


def job_ids_param(raw) -> list[str]:
    """?jobs=<id,id,...> as normalised ids; malformed ones are dropped (it is only a display hint)."""
    ids = []
    for part in (raw or "").split(","):
        try:
            job_id = validation.job_id(part.strip())
        except ApiError:
            continue
        if job_id not in ids:
            ids.append(job_id)
    return ids[:MAX_COUNT]


# --- pages ------------------------------------------------------------------------------------------
class _PresetPage:
    login_required = True

    def __init__(self, rpc, settings):
        self.rpc = rpc   # generation.submit takes the transport: it calls both services
        self.jobs_service = JobsClient(rpc)
        self.presets_service = PresetsClient(rpc)
        self.settings = settings
        self.generate_form = generate_form(settings)
        self.generate_schema = generate_request_schema(settings)

    def render_page(self, req, resp, slug, values=None, errors=None, status=falcon.HTTP_200):
        slug = validation.preset_slug(slug)
        preset = self.presets_service.get(slug)
        preset = {**preset, "cfg": clean_cfg(preset["cfg"])}
        checkpoints = [c for c in self.presets_service.checkpoints() if c != preset["checkpoint"]]
        job_ids = job_ids_param(req.get_param("jobs"))
        jobs = []
        if job_ids:
            # Before the gallery query: a job that is done here is already in the gallery below.
            by_id = {job["id"]: job for job in self.jobs_service.get_many(job_ids)}
            jobs = [by_id[i] for i in job_ids if i in by_id]
        offset = req.get_param_as_int("offset", min_value=0, default=0) or 0
        images = self.jobs_service.images(slug, GALLERY_PAGE, offset)
        fallback = images[0]["relative_path"] if images and not preset["cover_path"] else None
        empty_means = {**EMPTY_MEANS, **{f.name: preset[f.name] for f in self.generate_form if f.name in preset}}
        render(req, resp, "preset.html", status=status, preset=preset, jobs=jobs,
               images=images, offset=offset, page_size=GALLERY_PAGE, fallback_path=fallback,
               values=values or {f.name: f.default for f in self.generate_form}, errors=errors or {},
               generate_fields=[f.name for f in self.generate_form], generate_rows=form_rows(self.generate_form),
               choices={"checkpoint": checkpoints}, empty_means=empty_means)


class PresetResource(_PresetPage):
    """GET /presets/{slug}"""

    def on_get(self, req, resp, slug):
        self.render_page(req, resp, slug)


class PresetGenerateResource(_PresetPage):
    """POST /presets/{slug}/generate: the Generate form, through the REST API's own path."""

    def on_post(self, req, resp, slug):
        form = form_values(req)
        body = generate_body(form, self.generate_form)
        try:
            job_ids = generation.submit(self.rpc, self.settings, slug, body)
        except (ApiError, InvalidField) as exc:
            if isinstance(exc, ApiError) and exc.status != falcon.HTTP_400:
                raise
            values = {control.name: form.get(control.name, "") for control in self.generate_form}
            return self.render_page(req, resp, slug, values=values, errors=self.generate_errors(body, exc),
                                    status=falcon.HTTP_400)
        redirect(resp, f"/presets/{slug}?jobs={','.join(job_ids)}")

    def generate_errors(self, body: dict, exc) -> dict:
        """Every problem of the Generate form in words; `exc` (what submit raised: the first of them, or
        a problem only the services see, such as an unknown checkpoint) under its field."""
        errors = form_errors(GenerateRequest, body, self.generate_schema,
                             context=validation.generate_context(self.settings))
        field, message = field_message(exc)
        errors.setdefault(field, with_label(field, message, self.generate_schema))
        return errors


class PresetCoverResource:
    """POST /presets/{slug}/cover: one of this preset's own images becomes its cover."""

    login_required = True

    def __init__(self, rpc):
        self.presets_service = PresetsClient(rpc)

    def on_post(self, req, resp, slug):
        slug = validation.preset_slug(slug)
        self.presets_service.set_cover(slug, own_image(slug, form_values(req).get("relative_path")))
        redirect(resp, f"/presets/{slug}")


class PresetCoverClearResource:
    """POST /presets/{slug}/cover/clear"""

    login_required = True

    def __init__(self, rpc):
        self.presets_service = PresetsClient(rpc)

    def on_post(self, req, resp, slug):
        slug = validation.preset_slug(slug)
        self.presets_service.set_cover(slug, None)
        redirect(resp, f"/presets/{slug}")


class _PresetForm:
    login_required = True

    def __init__(self, rpc):
        self.presets_service = PresetsClient(rpc)

    def render_form(self, req, resp, mode, values, errors=None, status=falcon.HTTP_200, preset=None,
                    import_text="", import_errors=None):
        checkpoints = list(self.presets_service.checkpoints())
        current = values.get("checkpoint")
        if current and current not in checkpoints:
            checkpoints.insert(0, current)  # an edited preset keeps a checkpoint no longer listed
        render(req, resp, "preset_form.html", status=status, mode=mode, values=values, errors=errors or {},
               preset=preset, checkpoints=checkpoints, samplers=SAMPLERS, import_text=import_text,
               import_errors=import_errors or {}, max_import_bytes=MAX_IMPORT_BYTES, labels=PRESET_LABELS,
               required=PRESET_REQUIRED)

    def failed(self, req, resp, mode, exc, form, checked, preset=None):
        """The form again, with every problem of `checked` (the fields as the service saw them) and the
        user's input."""
        status = falcon.HTTP_409 if isinstance(exc, Conflict) else falcon.HTTP_400
        values = {name: form.get(name, "") for name in PRESET_KEYS}
        if preset:
            values["slug"] = preset["slug"]
        self.render_form(req, resp, mode, values, preset_errors(checked, exc), status, preset=preset)


def _new_values() -> dict:
    return {name: ("" if info.is_required() else info.default) for name, info in PresetFields.model_fields.items()}


class PresetNewResource(_PresetForm):
    """GET /presets/new: the create form and the import form."""

    def on_get(self, req, resp):
        self.render_form(req, resp, "new", _new_values())


class PresetsCollectionResource(_PresetForm):
    """POST /presets: create."""

    def on_post(self, req, resp):
        form = form_values(req)
        fields = preset_fields(form, with_slug=True)
        try:
            if fields["slug"] in RESERVED_SLUGS:
                raise InvalidField("slug", f"'{fields['slug']}' is reserved for the web UI; choose another")
            created = self.presets_service.create(fields)
        except (InvalidField, Conflict) as exc:
            return self.failed(req, resp, "new", exc, form, fields)
        redirect(resp, f"/presets/{created['slug']}")


class PresetEditResource(_PresetForm):
    """GET/POST /presets/{slug}/edit: every field but the slug."""

    def _preset(self, slug):
        return self.presets_service.get(validation.preset_slug(slug))

    def on_get(self, req, resp, slug):
        preset = self._preset(slug)
        values = export_shape(preset)
        self.render_form(req, resp, "edit", values, preset=preset)

    def on_post(self, req, resp, slug):
        preset = self._preset(slug)
        form = form_values(req)
        fields = preset_fields(form, with_slug=False)
        try:
            self.presets_service.update(preset["slug"], fields)
        except (InvalidField, Conflict) as exc:
            # as the service checks it: the stored preset with the form's changes
            checked = {**export_shape(preset), **fields, "slug": preset["slug"]}
            return self.failed(req, resp, "edit", exc, form, checked, preset=preset)
        redirect(resp, f"/presets/{preset['slug']}")


class PresetDeleteResource:
    """POST /presets/{slug}/delete"""

    login_required = True

    def __init__(self, rpc):
        self.presets_service = PresetsClient(rpc)

    def on_post(self, req, resp, slug):
        self.presets_service.delete(validation.preset_slug(slug))
        redirect(resp, "/")


class PresetsExportResource:
    """GET /presets/export.json: every preset as PresetFields objects, ready for /presets/import."""

    login_required = True

    def __init__(self, rpc):
        self.presets_service = PresetsClient(rpc)

    def on_get(self, req, resp):
        presets = [export_shape(preset) for preset in self.presets_service.export()]
        resp.content_type = falcon.MEDIA_JSON
        resp.downloadable_as = "gaze-presets.json"
        resp.text = json.dumps(presets, indent=2, ensure_ascii=False) + "\n"


def parse_import(text: str) -> list:
    """The textarea's JSON as a list of presets: an array (what /presets/export.json writes), one preset
    object, or {"presets": [...]} (the REST API's list). Raises ValueError with a message for the user."""
    if not text.strip():
        raise ValueError("paste the JSON of one or more presets, or choose a file")
    try:
        data = validation.strict_json_loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("presets"), list):
        data = data["presets"]
    elif isinstance(data, dict) and "slug" in data:
        data = [data]
    if not isinstance(data, list):
        raise ValueError('must be a JSON array of presets, as Export all writes it (or {"presets": [...]})')
    if not data:
        raise ValueError("the list of presets is empty")
    if len(data) > MAX_IMPORT_PRESETS:
        raise ValueError(f"at most {MAX_IMPORT_PRESETS} presets per import")
    return data


class PresetsImportResource(_PresetForm):
    """POST /presets/import (urlencoded, field presets_json): create each preset, report each outcome."""

    # Read by SessionAuth before it parses the form for the CSRF check: the body is refused unread.
    max_form_bytes = MAX_IMPORT_BYTES

    def on_post(self, req, resp):
        if req.content_length is not None and req.content_length > MAX_IMPORT_BYTES:
            raise ApiError(falcon.HTTP_413, f"body larger than {MAX_IMPORT_BYTES} bytes", "body")
        text = form_values(req).get("presets_json", "")
        try:
            items = parse_import(text)
        except ValueError as exc:
            return self.render_form(req, resp, "new", _new_values(), status=falcon.HTTP_400,
                                    import_text=text, import_errors={"presets_json": str(exc)})
        results = [self._import_one(index, item) for index, item in enumerate(items, 1)]
        counts = {outcome: sum(1 for r in results if r["outcome"] == outcome)
                  for outcome in ("created", "skipped", "invalid")}
        render(req, resp, "preset_import.html", results=results, counts=counts)

    def _import_one(self, index, item) -> dict:
        """One preset's outcome: created, skipped (its slug exists) or invalid, with every problem
        ({field: message}) in `errors`."""
        if not isinstance(item, dict):
            return {"index": index, "slug": None, "name": None, "outcome": "invalid",
                    "errors": {"preset": 'Not a JSON object: each preset is {"slug": ..., "name": ..., ...}'}}
        fields = {key: value for key, value in item.items() if key not in IGNORED_IMPORT_KEYS}
        slug = fields.get("slug") if isinstance(fields.get("slug"), str) else None
        name = fields.get("name") if isinstance(fields.get("name"), str) else None
        result = {"index": index, "slug": slug, "name": name, "errors": {}}
        try:
            if slug in RESERVED_SLUGS:
                raise InvalidField("slug", f"'{slug}' is reserved for the web UI")
            self.presets_service.create(fields)
        except Conflict:
            return {**result, "outcome": "skipped"}
        except InvalidField as exc:
            return {**result, "outcome": "invalid", "errors": preset_errors(fields, exc)}
        return {**result, "outcome": "created"}


class PresetGalleryResource:
    """GET /presets/{slug}/gallery?limit=N: the preset's N newest gallery items, as the preset page renders
    them (one template, gallery_item.html): preset.js adds those its page lacks as a batch's jobs finish,
    so an image that arrives live shows the same prompt, seed and settings as after a reload."""

    login_required = True

    def __init__(self, rpc):
        self.jobs_service = JobsClient(rpc)
        self.presets_service = PresetsClient(rpc)

    def on_get(self, req, resp, slug):
        slug = validation.preset_slug(slug)
        preset = self.presets_service.get(slug)
        limit = req.get_param_as_int("limit", min_value=1, max_value=GALLERY_PAGE, default=MAX_COUNT)
        render(req, resp, "gallery_items.html", preset=preset, images=self.jobs_service.images(slug, limit, 0))
