"""The web UI's field errors: every problem of a refused form at once, in words a person can act on.

The REST API answers the first problem pydantic finds, tersely ("width: must be a multiple of 8"; shared/
schemas.py first_error), and keeps doing so. A form instead shows every field's problem at once, next to
the field: when a form is refused, its input is validated again with the same model (and the same limits)
and each of pydantic's errors is put into words by MESSAGES, the one table of them. The numbers in those
words come from the field's JSON schema, so they follow the model's constraints (and, for the Generate
form, the operator's limits) instead of being written twice.
"""
from __future__ import annotations

import string

from pydantic import ValidationError

from shared.schemas import FieldError, value_schema

# (field, pydantic error type) -> the words; a field of None is any field. Two entries stand for a kind of
# field rather than an error type: "integer" and "number" answer any problem with such a field (text where
# a number belongs, a value out of range, not a multiple of the step), always with the values it accepts.
# Placeholders: {label} (the control's label), {field} (the name), {known} (every field's name), the
# field's JSON schema keywords ({minimum}, {maximum}, {multipleOf}, {maxLength}), {length} (of the input)
# and {detail} (a validator's own message). An entry whose placeholders the field cannot fill is skipped.
MESSAGES = {
    ("slug", "string_pattern_mismatch"):
        "{label} may use lowercase letters, digits, _ and - only, starting with a letter or digit (e.g. my_preset)",
    ("sampler", "string_pattern_mismatch"):
        "{label} may use lowercase letters, digits and _ only (e.g. euler_ancestral)",
    ("checkpoint", "value_error"):
        "{label} must be a model path such as Illustrious/model.safetensors (not starting with /, no ..)",
    (None, "integer_step"): "{label} must be a multiple of {multipleOf} between {minimum} and {maximum}",
    (None, "integer"): "{label} must be a whole number from {minimum} to {maximum}",
    (None, "number"): "{label} must be a number from {minimum} to {maximum}",
    (None, "missing"): "{label} is required",
    (None, "string_too_short"): "{label} is required",
    (None, "string_too_long"): "{label} can be at most {maxLength} characters (this has {length})",
    (None, "string_type"): "{label} must be text",
    (None, "string_pattern_mismatch"): "{label} contains characters that are not allowed here",
    (None, "extra_forbidden"): "\u201c{field}\u201d is not a setting GAZE knows (known: {known})",
    (None, "value_error"): "{label} {detail}",
}


def form_errors(model, data: dict, schema: dict, labels=None, context=None) -> dict[str, str]:
    """{field: message} for every field of `data` that `model` refuses ({} when it accepts all of it), in
    the order of the model's fields. `schema`: the model's JSON schema (its properties' titles and limits);
    `labels`: what the form calls a field where that is not its schema title."""
    try:
        model.model_validate(data, context=context)
    except ValidationError as exc:
        return explain(exc, schema, labels)
    return {}


def explain(exc: ValidationError, schema: dict, labels=None) -> dict[str, str]:
    """Every error of `exc` as {field: message}; a field's first problem only (one message per control)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        field, message = _explain(err, schema.get("properties", {}), set(schema.get("required", ())), labels or {})
        errors.setdefault(field, message)
    return errors


def label_of(field: str, schema: dict, labels=None) -> str:
    return (labels or {}).get(field) or schema.get("properties", {}).get(field, {}).get("title") or field


def with_label(field: str, message: str, schema: dict, labels=None) -> str:
    """A message that names no field (a service's "unknown checkpoint; known: ...") as one that does."""
    return f"{label_of(field, schema, labels)}: {message}"


def _explain(err: dict, properties: dict, required: set, labels: dict) -> tuple[str, str]:
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, FieldError):     # a check across fields ("give the height too") names its field
        return original.field, _sentence(original.message)
    field = str(err["loc"][0]) if err["loc"] else "form"
    outer = properties.get(field, {})
    prop = value_schema(outer)       # an Optional field's limits are on its non-null branch, its title outside
    kind = err["type"]
    if field in required and isinstance(err.get("input"), str) and not err["input"].strip():
        kind = "missing"           # a required field left empty: say so, not what its value should look like
    if prop.get("type") in ("integer", "number") and kind != "missing":
        kind = "integer_step" if prop.get("type") == "integer" and prop.get("multipleOf", 1) != 1 else prop["type"]
    elif kind == "value_error" and "maxLength" in prop and _too_long(err, prop):
        kind = "string_too_long"   # a validator's length check (the Generate form's prompt limits)
    detail = err["msg"].removeprefix("Value error, ")
    values = {**prop, "label": labels.get(field) or outer.get("title") or field, "field": field,
              "known": ", ".join(properties), "detail": detail,
              "length": len(err["input"]) if isinstance(err.get("input"), str) else ""}
    for key in ((field, kind), (None, kind)):
        template = MESSAGES.get(key)
        if template is not None and _fillable(template, values):
            return field, template.format_map(values)
    return field, f"{values['label']}: {detail}"


def _too_long(err: dict, prop: dict) -> bool:
    return isinstance(err.get("input"), str) and len(err["input"]) > prop["maxLength"]


def _fillable(template: str, values: dict) -> bool:
    return all(name in values for _, name, _, _ in string.Formatter().parse(template) if name)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
