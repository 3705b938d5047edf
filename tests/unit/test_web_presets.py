"""The preset pages over the real Falcon app with fake services: a logged-in admin (FakeAdmin), an
in-memory presets service that validates like the real one (PresetFields), and a recording jobs service.

What is pinned here: login and CSRF on every route, the Generate form going through the REST API's
own path with the form's strings converted to JSON types, field errors shown next to the field with the
input kept, create/edit/delete, cover set/clear, export and import.
"""
from __future__ import annotations

import io
import json
import re
from urllib.parse import urlencode

import falcon.testing
import pytest
from pydantic import ValidationError

from shared import config
from shared.errors import Conflict, InvalidField, NotFound
from shared.schemas import PresetFields, first_error
from services.gateway.app import create_app
from services.gateway.web.render import MAX_FORM_BYTES
from shared.contracts.presets.resolve import resolve
from tests.fakes import COOKIES, CSRF, FakeAdmin, FakeKeys, FakeProbes, FakeRpc

SLUG = "example_01"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CHECKPOINTS = ["Illustrious/model.safetensors", "SDXL/sd_xl_base_1.0.safetensors"]
EXAMPLE = {"slug": SLUG, "name": "Example Preset", "prompt": "portrait of a traveller", "negative": "lowres",
           "checkpoint": "Illustrious/model.safetensors", "width": 832, "height": 1216, "steps": 28,
           "cfg": 5.5, "sampler": "euler_ancestral", "cover_path": None}
IMAGE = {"job_id": "11111111-2222-3333-4444-555555555555", "relative_path": f"presets/{SLUG}/gen_1_abc.png",
         "seed": 424242, "width": 832, "height": 1216, "prompt": "portrait of a traveller, in the rain",
         "negative": "lowres", "checkpoint": "Illustrious/model.safetensors", "finished_at": 1.0}


class InMemoryServices(FakeRpc):
    """presets: an in-memory store validated with PresetFields like the real service; jobs: FakeRpc's,
    recorded, with the images of IMAGE."""

    def __init__(self):
        super().__init__(jobs=())
        self.presets = {SLUG: dict(EXAMPLE)}
        self.images = [dict(IMAGE)]

    # presets
    def _get(self, slug):
        if slug not in self.presets:
            raise NotFound("preset", slug)
        return self.presets[slug]

    @staticmethod
    def _validated(fields):
        try:
            return PresetFields.model_validate(fields).model_dump()
        except ValidationError as exc:
            raise InvalidField(*first_error(exc)) from None

    def presets_list(self):
        return [{"preset_id": p["slug"], "slug": p["slug"], "name": p["name"], "has_cover": bool(p["cover_path"]),
                 "cover_path": p["cover_path"]} for p in self.presets.values()]

    def presets_get(self, slug):
        return dict(self._get(slug))

    def presets_export(self):
        return [{key: p[key] for key in PresetFields.model_fields} for p in self.presets.values()]

    def presets_checkpoints(self):
        return list(CHECKPOINTS)

    def presets_resolve(self, slug, overrides):
        return resolve(self._get(slug), overrides, CHECKPOINTS).model_dump()

    def presets_create(self, fields):
        row = self._validated(fields)
        if row["slug"] in self.presets:
            raise Conflict("slug", f"a preset with slug '{row['slug']}' already exists")
        self.presets[row["slug"]] = {**row, "cover_path": None}
        return dict(self.presets[row["slug"]])

    def presets_update(self, slug, fields):
        current = self._get(slug)
        editable = {name: current[name] for name in PresetFields.model_fields}
        row = self._validated({**editable, **fields, "slug": slug})
        current.update(row)
        return dict(current)

    def presets_delete(self, slug):
        self._get(slug)
        del self.presets[slug]

    def presets_set_cover(self, slug, relative_path):
        self._get(slug)["cover_path"] = relative_path
        return {"slug": slug, "cover_path": relative_path}

    # jobs
    def jobs_images(self, slug, limit, offset):
        return [i for i in self.images if i["relative_path"].startswith(f"presets/{slug}/")][offset:offset + limit]


@pytest.fixture
def rpc():
    return InMemoryServices()


@pytest.fixture
def client(tmp_path, rpc):
    settings = config.load({"GAZE_MEDIA_ROOT": str(tmp_path)})
    return falcon.testing.TestClient(create_app(settings, rpc=rpc, keys=FakeKeys(valid=()), admin=FakeAdmin(),
                                                 probes=FakeProbes()))


def get(client, path, **kwargs):
    return client.simulate_get(path, cookies=COOKIES, headers={"Accept": "text/html"}, **kwargs)


def post(client, path, form=None, csrf=CSRF, cookies=COOKIES, headers=None):
    form = dict(form or {})
    if csrf is not None:
        form["csrf_token"] = csrf
    return client.simulate_post(path, body=urlencode(form), cookies=cookies,
                                headers={**FORM, "Accept": "text/html", **(headers or {})})


def field_error(html, field):
    """The error text rendered next to `field`, or None; the control must be marked aria-invalid."""
    match = re.search(rf'<span class="field-error" id="err-{field}">([^<]*)</span>', html)
    if match:
        assert re.search(rf'name="{field}" id="f-{field}"[^>]*aria-invalid="true" aria-describedby="err-{field}"', html)
    return match.group(1) if match else None


def test_logout_ends_the_session_and_expires_the_cookie(client):
    result = post(client, "/logout")
    assert result.status_code == 303, result.text
    cookie = result.cookies["gaze_session"]
    assert cookie.value == "" and cookie.expires.year == 1970 and cookie.http_only and cookie.same_site == "Lax"
    assert cookie.path == "/"
    assert get(client, "/queue").status_code in (302, 303), "the session is gone"


# --------------------------------------------------------------------------------------------------
# login and CSRF
# --------------------------------------------------------------------------------------------------

PAGES = ["/presets/new", f"/presets/{SLUG}", f"/presets/{SLUG}/edit", "/presets/export.json"]
POSTS = ["/presets", "/presets/import", f"/presets/{SLUG}/generate", f"/presets/{SLUG}/cover",
         f"/presets/{SLUG}/cover/clear", f"/presets/{SLUG}/edit", f"/presets/{SLUG}/delete"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_login_without_a_session(client, rpc, path):
    result = client.simulate_get(path, headers={"Accept": "text/html"})
    assert result.status_code == 303
    assert result.headers["location"].startswith("/login?next=")
    assert rpc.calls == []


@pytest.mark.parametrize("path", POSTS)
def test_posts_without_a_session_are_refused(client, rpc, path):
    result = post(client, path, cookies={})
    assert result.status_code == 401
    assert rpc.calls == []


@pytest.mark.parametrize("csrf", [None, "", "wrong", "\u00e9t\u00e9", "\U0001f600"])   # non-ASCII: not a 500
@pytest.mark.parametrize("path", POSTS)
def test_posts_without_the_csrf_token_are_403(client, rpc, path, csrf):
    result = post(client, path, {"relative_path": IMAGE["relative_path"], "slug": "x", "name": "X"}, csrf=csrf)
    assert result.status_code == 403
    assert rpc.calls == []


# --------------------------------------------------------------------------------------------------
# the preset page
# --------------------------------------------------------------------------------------------------

def test_preset_page_shows_settings_form_and_gallery(client, rpc):
    result = get(client, f"/presets/{SLUG}")
    assert result.status_code == 200
    html = result.text
    for text in ("Example Preset", "portrait of a traveller", "lowres", "832 × 1216", "euler_ancestral", "5.5"):
        assert text in html
    assert 'action="/presets/example_01/generate"' in html
    assert 'name="csrf_token" value="t"' in html
    # checkpoint select: the preset's own is the (empty) default, the others are listed
    assert "<option value=\"\">Illustrious/model.safetensors (preset default)</option>" in html
    assert '<option value="SDXL/sd_xl_base_1.0.safetensors"' in html
    # gallery item: lazy thumbnail linking to the full image, seed, size, checkpoint, set-as-cover form
    assert f'href="/static/uploads/{IMAGE["relative_path"]}"' in html
    assert f'src="/thumbs/512/{IMAGE["relative_path"]}"' in html
    assert 'loading="lazy"' in html
    assert "424242" in html and "832×1216" in html and "in the rain" in html
    assert f'name="relative_path" value="{IMAGE["relative_path"]}"' in html
    # no cover: the newest image stands in, and there is nothing to clear
    assert "no cover" in html
    assert "/cover/clear" not in html
    assert "preset.js" in html
    assert rpc.called("jobs", "images") == [(SLUG, 60, 0)]


def test_preset_page_without_images_shows_the_placeholder(client, rpc):
    rpc.images = []
    html = get(client, f"/presets/{SLUG}").text
    assert 'class="placeholder"' in html
    assert "No images of this preset yet" in html


def test_preset_page_with_a_cover_offers_clear(client, rpc):
    rpc.presets[SLUG]["cover_path"] = IMAGE["relative_path"]
    html = get(client, f"/presets/{SLUG}").text
    assert 'action="/presets/example_01/cover/clear"' in html
    assert 'alt="Cover of Example Preset"' in html
    assert "no cover" not in html


def test_unknown_preset_is_404(client, rpc):
    assert get(client, "/presets/nope").status_code == 404
    assert get(client, "/presets/Bad%20Slug").status_code == 404


def test_cfg_stored_as_real_is_shown_rounded(client, rpc):
    rpc.presets[SLUG]["cfg"] = 6.099999904632568
    html = get(client, f"/presets/{SLUG}").text
    assert "<dd>6.1</dd>" in html


# --------------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------------

def test_generate_converts_the_form_and_redirects_with_the_job_ids(client, rpc):
    form = {"count": "3", "seed": "", "extra_positive": "in the rain", "extra_negative": "",
            "width": "512", "height": "768", "checkpoint": ""}
    result = post(client, f"/presets/{SLUG}/generate", form)
    assert result.status_code == 303, result.text
    # exactly the REST path: resolve with the overrides, then create with the count
    assert rpc.called("presets", "resolve") == [(SLUG, {"extra_positive": "in the rain", "width": 512, "height": 768})]
    (spec, count), = rpc.called("jobs", "create")
    assert count == 3 and spec["width"] == 512 and spec["prompt"] == "portrait of a traveller, in the rain"
    ids = list(rpc.jobs)
    assert result.headers["location"] == f"/presets/{SLUG}?jobs={','.join(ids)}"


def test_generate_with_everything_empty_is_the_presets_defaults(client, rpc):
    result = post(client, f"/presets/{SLUG}/generate", {k: "" for k in ("count", "seed", "width", "height",
                                                                       "extra_positive", "extra_negative",
                                                                       "checkpoint")})
    assert result.status_code == 303
    assert rpc.called("presets", "resolve") == [(SLUG, {})]
    assert rpc.called("jobs", "create")[0][1] == 1


def test_generate_passes_seed_and_checkpoint(client, rpc):
    result = post(client, f"/presets/{SLUG}/generate",
                  {"count": "1", "seed": " 42 ", "checkpoint": "SDXL/sd_xl_base_1.0.safetensors"})
    assert result.status_code == 303
    assert rpc.called("presets", "resolve") == [(SLUG, {"seed": 42, "checkpoint": "SDXL/sd_xl_base_1.0.safetensors"})]


@pytest.mark.parametrize("form,field", [
    ({"count": "abc"}, "count"),
    ({"count": "21"}, "count"),
    ({"count": "0"}, "count"),
    ({"count": "2.5"}, "count"),
    ({"seed": "-1"}, "seed"),
    ({"seed": "lucky"}, "seed"),
    ({"width": "512"}, "height"),
    ({"height": "512"}, "width"),
    ({"width": "500", "height": "512"}, "width"),
    ({"extra_positive": "x" * 2001}, "extra_positive"),
    ({"checkpoint": "../etc/passwd"}, "checkpoint"),
    ({"checkpoint": "Unknown/model.safetensors"}, "checkpoint"),  # refused by presets.resolve
])
def test_bad_generate_value_is_400_next_to_the_field(client, rpc, form, field):
    result = post(client, f"/presets/{SLUG}/generate", {"count": "1", **form})
    assert result.status_code == 400
    assert result.headers["content-type"].startswith("text/html")
    assert field_error(result.text, field), result.text
    assert rpc.called("jobs", "create") == []


def test_bad_generate_keeps_the_users_input(client, rpc):
    form = {"count": "abc", "seed": "7", "extra_positive": "wet <streets>", "extra_negative": "blur",
            "width": "", "height": "", "checkpoint": "SDXL/sd_xl_base_1.0.safetensors"}
    html = post(client, f"/presets/{SLUG}/generate", form).text
    assert 'value="abc"' in html and 'value="7"' in html
    assert ">wet &lt;streets&gt;</textarea>" in html and ">blur</textarea>" in html
    assert '<option value="SDXL/sd_xl_base_1.0.safetensors" selected>' in html
    assert field_error(html, "count") == "Images must be a whole number from 1 to 20"
    # the page around the form is still whole
    assert "Example Preset" in html and IMAGE["relative_path"] in html


def test_generate_for_an_unknown_preset_is_404(client, rpc):
    assert post(client, "/presets/nope/generate", {"count": "1"}).status_code == 404
    assert rpc.called("jobs", "create") == []


def test_huge_digit_string_is_an_error_not_a_crash(client, rpc):
    result = post(client, f"/presets/{SLUG}/generate", {"seed": "9" * 5000})
    assert result.status_code == 400
    assert field_error(result.text, "seed")


def test_preset_page_lists_the_batch_for_live_status(client, rpc):
    post(client, f"/presets/{SLUG}/generate", {"count": "2"})
    first, second = list(rpc.jobs)
    rpc.jobs[second].update(status="failed", error="out of memory")
    html = get(client, f"/presets/{SLUG}", params={"jobs": f"{first},not-a-uuid,{second}"}).text
    assert f'data-job-id="{first}" data-status="pending"' in html
    assert f'data-job-id="{second}" data-status="failed"' in html
    assert 'class="status status-pending"' in html and "out of memory" in html
    assert 'class="job-error' in html
    assert rpc.called("jobs", "get_many") == [([first, second],)]


# --------------------------------------------------------------------------------------------------
# cover
# --------------------------------------------------------------------------------------------------

def test_set_cover(client, rpc):
    result = post(client, f"/presets/{SLUG}/cover", {"relative_path": IMAGE["relative_path"]})
    assert result.status_code == 303
    assert result.headers["location"] == f"/presets/{SLUG}"
    assert rpc.called("presets", "set_cover") == [(SLUG, IMAGE["relative_path"])]


@pytest.mark.parametrize("path", [
    "presets/other/gen_1_abc.png",
    f"presets/{SLUG}x/gen_1_abc.png",
    f"presets/{SLUG}/../other/gen_1_abc.png",
    f"presets/{SLUG}/",
    f"/presets/{SLUG}/gen_1_abc.png",
    "",
])
def test_cover_from_another_preset_is_refused(client, rpc, path):
    result = post(client, f"/presets/{SLUG}/cover", {"relative_path": path})
    assert result.status_code == 400
    assert rpc.called("presets", "set_cover") == []


def test_clear_cover(client, rpc):
    rpc.presets[SLUG]["cover_path"] = IMAGE["relative_path"]
    result = post(client, f"/presets/{SLUG}/cover/clear")
    assert result.status_code == 303
    assert result.headers["location"] == f"/presets/{SLUG}"
    assert rpc.called("presets", "set_cover") == [(SLUG, None)]


# --------------------------------------------------------------------------------------------------
# create / edit / delete
# --------------------------------------------------------------------------------------------------

NEW = {"slug": "rainy_street", "name": "Rainy street", "prompt": "a street in the rain", "negative": "",
       "checkpoint": "SDXL/sd_xl_base_1.0.safetensors", "width": "768", "height": "1024", "steps": "30",
       "cfg": "6.5", "sampler": "dpmpp_2m"}


def test_new_preset_form(client, rpc):
    html = get(client, "/presets/new").text
    assert 'action="/presets"' in html and 'action="/presets/import"' in html
    assert 'name="slug"' in html and 'value="1024"' in html and 'value="euler_ancestral"' in html
    for checkpoint in CHECKPOINTS:
        assert f'<option value="{checkpoint}"' in html
    assert 'href="/presets/export.json"' in html
    assert "data-load-into" in html


def test_create_converts_numbers_and_redirects(client, rpc):
    result = post(client, "/presets", NEW)
    assert result.status_code == 303, result.text
    assert result.headers["location"] == "/presets/rainy_street"
    (fields,), = rpc.called("presets", "create")
    assert fields == {**NEW, "width": 768, "height": 1024, "steps": 30, "cfg": 6.5}
    assert rpc.presets["rainy_street"]["sampler"] == "dpmpp_2m"


def test_create_with_empty_numbers_takes_the_defaults(client, rpc):
    result = post(client, "/presets", {**NEW, "width": "", "height": "", "steps": "", "cfg": ""})
    assert result.status_code == 303
    (fields,), = rpc.called("presets", "create")
    assert not {"width", "height", "steps", "cfg"} & set(fields)
    assert rpc.presets["rainy_street"]["width"] == 1024


def test_create_with_a_taken_slug_is_409_next_to_the_slug(client, rpc):
    result = post(client, "/presets", {**NEW, "slug": SLUG})
    assert result.status_code == 409
    assert "already exists" in field_error(result.text, "slug")
    assert 'value="Rainy street"' in result.text  # input kept


@pytest.mark.parametrize("form,field", [
    ({"slug": "Bad Slug"}, "slug"),
    ({"slug": ""}, "slug"),
    ({"slug": "new"}, "slug"),
    ({"name": ""}, "name"),
    ({"width": "abc"}, "width"),
    ({"width": "100"}, "width"),
    ({"steps": "0"}, "steps"),
    ({"cfg": "lots"}, "cfg"),
    ({"cfg": "99"}, "cfg"),
    ({"sampler": "Euler A"}, "sampler"),
    ({"checkpoint": "../x"}, "checkpoint"),
])
def test_create_with_a_bad_field_is_400_next_to_the_field(client, rpc, form, field):
    result = post(client, "/presets", {**NEW, **form})
    assert result.status_code == 400
    assert field_error(result.text, field), result.text
    assert "rainy_street" not in rpc.presets
    if field != "slug":
        assert 'value="rainy_street"' in result.text


def test_edit_form_is_prefilled_and_the_slug_is_fixed(client, rpc):
    html = get(client, f"/presets/{SLUG}/edit").text
    assert 'action="/presets/example_01/edit"' in html
    assert 'value="Example Preset"' in html and 'value="832"' in html and 'value="5.5"' in html
    assert 'name="slug"' not in html
    assert 'action="/presets/example_01/delete"' in html and "data-confirm" in html


def test_edit_updates_and_redirects(client, rpc):
    form = {**NEW, "slug": "ignored", "name": "Renamed", "prompt": ""}
    result = post(client, f"/presets/{SLUG}/edit", form)
    assert result.status_code == 303
    assert result.headers["location"] == f"/presets/{SLUG}"
    (slug, fields), = rpc.called("presets", "update")
    assert slug == SLUG and "slug" not in fields
    assert fields["name"] == "Renamed" and fields["prompt"] == "" and fields["width"] == 768
    assert rpc.presets[SLUG]["name"] == "Renamed"


def test_edit_with_a_bad_field_keeps_the_input(client, rpc):
    result = post(client, f"/presets/{SLUG}/edit", {**NEW, "steps": "500"})
    assert result.status_code == 400
    assert field_error(result.text, "steps")
    assert 'value="500"' in result.text and 'value="Rainy street"' in result.text
    assert rpc.presets[SLUG]["steps"] == 28


def test_edit_of_an_unknown_preset_is_404(client, rpc):
    assert get(client, "/presets/nope/edit").status_code == 404
    assert post(client, "/presets/nope/edit", NEW).status_code == 404


def test_delete(client, rpc):
    result = post(client, f"/presets/{SLUG}/delete")
    assert result.status_code == 303
    assert result.headers["location"] == "/"
    assert rpc.called("presets", "delete") == [(SLUG,)]
    assert SLUG not in rpc.presets


# --------------------------------------------------------------------------------------------------
# export / import
# --------------------------------------------------------------------------------------------------

def test_export_is_a_json_download_of_preset_fields(client, rpc):
    rpc.presets["second"] = {**EXAMPLE, "slug": "second", "name": "Second", "cfg": 6.099999904632568,
                             "cover_path": "presets/second/a.png"}
    result = get(client, "/presets/export.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.headers["content-disposition"].startswith("attachment")
    assert "gaze-presets.json" in result.headers["content-disposition"]
    presets = json.loads(result.text)
    assert [p["slug"] for p in presets] == [SLUG, "second"]
    assert all(set(p) == set(PresetFields.model_fields) for p in presets)
    assert presets[1]["cfg"] == 6.1
    assert presets[0] == {k: EXAMPLE[k] for k in PresetFields.model_fields}


def test_export_then_import_round_trips(client, rpc):
    exported = get(client, "/presets/export.json").text
    del rpc.presets[SLUG]
    result = post(client, "/presets/import", {"presets_json": exported})
    assert result.status_code == 200
    assert rpc.presets[SLUG]["prompt"] == EXAMPLE["prompt"]


def preset(slug, **extra):
    return {"slug": slug, "name": slug.title(), "checkpoint": "Illustrious/model.safetensors", **extra}


def outcomes(html):
    return re.findall(r'data-outcome="(\w+)"(?: data-slug="([^"]*)")?', html)


def test_import_reports_created_skipped_and_invalid(client, rpc):
    items = [preset("fresh"), preset(SLUG), preset("bad", width=100), "not an object", preset("fresh"),
             preset("with_extras", cover_path="presets/x/y.png", preset_id="with_extras", has_cover=True),
             preset("unknown_key", colour="red")]
    result = post(client, "/presets/import", {"presets_json": json.dumps({"presets": items})})
    assert result.status_code == 200, result.text
    html = result.text
    assert outcomes(html) == [("created", "fresh"), ("skipped", SLUG), ("invalid", "bad"), ("invalid", ""),
                              ("skipped", "fresh"), ("created", "with_extras"), ("invalid", "unknown_key")]
    assert '<li class="field-error" data-field="width">Width must be a multiple of 8 between 64 and 8192</li>' in html
    assert '<li class="field-error" data-field="colour">\u201ccolour\u201d is not a setting GAZE knows' in html
    assert 'data-count="created">2<' in html and 'data-count="skipped">2<' in html and 'data-count="invalid">3<' in html
    assert set(rpc.presets) == {SLUG, "fresh", "with_extras"}
    assert rpc.presets[SLUG]["name"] == "Example Preset"  # skipped, never overwritten
    assert rpc.presets["with_extras"]["cover_path"] is None


def test_import_accepts_a_plain_array(client, rpc):
    result = post(client, "/presets/import", {"presets_json": json.dumps([preset("one"), preset("two")])})
    assert outcomes(result.text) == [("created", "one"), ("created", "two")]


@pytest.mark.parametrize("text", ["", "not json", "[]", '"a string"', "42", '{"presets": 3}', "[NaN]"])
def test_import_of_unusable_json_is_400_next_to_the_textarea(client, rpc, text):
    result = post(client, "/presets/import", {"presets_json": text})
    assert result.status_code == 400
    assert field_error(result.text, "presets_json")
    assert rpc.called("presets", "create") == []


def test_import_keeps_the_text_on_error(client, rpc):
    result = post(client, "/presets/import", {"presets_json": "[{oops"})
    assert ">[{oops</textarea>" in result.text


def test_import_up_to_1_mib_is_read(client, rpc):
    padding = " " * (1024 * 1024 - 200)  # bigger than the API's 64 KiB limit, smaller than 1 MiB
    body = urlencode({"csrf_token": CSRF, "presets_json": json.dumps([preset("big")]) + padding})
    assert 64 * 1024 < len(body) <= 1024 * 1024
    result = client.simulate_post("/presets/import", body=body, cookies=COOKIES, headers=FORM)
    assert result.status_code == 200
    assert "big" in rpc.presets


@pytest.mark.parametrize("accept,kind", [("text/html", "text/html"), ("application/json", "application/json")])
def test_import_over_1_mib_is_413(client, rpc, accept, kind):
    body = urlencode({"csrf_token": CSRF, "presets_json": "[" + " " * (1024 * 1024) + "]"})
    result = client.simulate_post("/presets/import", body=body, cookies=COOKIES, headers={**FORM, "Accept": accept})
    assert result.status_code == 413
    assert result.headers["content-type"].startswith(kind)
    assert rpc.called("presets", "create") == []


def test_live_status_of_a_whole_batch(client, rpc):
    """gaze.js polls /ui/jobs?ids=<id,id,...> for the batch the preset page lists."""
    post(client, f"/presets/{SLUG}/generate", {"count": "3"})
    ids = list(rpc.jobs)
    result = client.simulate_get("/ui/jobs", params={"ids": ",".join(ids)}, cookies=COOKIES)
    assert result.status_code == 200
    assert [job["id"] for job in result.json["jobs"]] == ids
    assert rpc.called("jobs", "get_many")[-1] == (ids,)


# --- every UI POST bounded and parsed like the API's bodies ---------------------------------------

def chunked_post(client, path, body: bytes, cookies=""):
    """What gunicorn hands the app for a `Transfer-Encoding: chunked` form: no CONTENT_LENGTH, a
    wsgi.input that ends where the body ends, and wsgi.input_terminated set."""
    env = falcon.testing.create_environ(path=path, method="POST", headers={**FORM, "Cookie": cookies})
    env.pop("CONTENT_LENGTH", None)
    env["wsgi.input"] = io.BytesIO(body)
    env["wsgi.input_terminated"] = True
    start = falcon.testing.StartResponseMock()
    text = b"".join(client.app(env, start)).decode()
    return start.status, text


@pytest.mark.parametrize("path, cookies", [("/login", ""), ("/presets/city/cover", "gaze_session=valid")])
def test_a_ui_form_past_the_limit_is_413_whatever_its_framing(client, rpc, path, cookies):
    body = b"csrf_token=" + CSRF.encode() + b"&password=" + b"a" * MAX_FORM_BYTES
    status, text = chunked_post(client, path, body, cookies)
    assert status.startswith("413"), (status, text)
    result = client.simulate_post(path, body=body, headers={**FORM, "Cookie": cookies})
    assert result.status_code == 413
    assert rpc.calls == []


@pytest.mark.parametrize("body, status", [
    (b"csrf_token=%FF%FE&relative_path=x", 400),                  # not UTF-8
    ("&".join(f"f{i}=1" for i in range(1001)).encode(), 400),    # too many fields
])
def test_a_ui_form_that_cannot_be_read_is_a_400(client, rpc, body, status):
    result = client.simulate_post("/presets/city/cover", body=body, cookies=COOKIES, headers=FORM)
    assert result.status_code == status, result.text
    assert rpc.calls == []


@pytest.mark.parametrize("token", ["\u00e9t\u00e9", "\U0001f600", ""])
def test_a_login_token_that_is_not_ascii_is_refused_not_a_500(client, token):
    result = client.simulate_post("/login", body=urlencode({"login_token": token, "password": "x"}),
                                  headers={**FORM, "Cookie": "gaze_login_csrf=expected"})
    assert result.status_code == 403, result.text


# --- every problem at once, in words; required fields marked --------------------------------------

def summary(html):
    """The messages listed above a refused form, by field."""
    return dict(re.findall(r'<li data-error-for="(\w+)">(?:<a href="#f-\w+">)?([^<]*)', html))


def test_create_with_several_bad_fields_names_every_one_at_once(client, rpc):
    result = post(client, "/presets", {**NEW, "slug": "Bad Slug", "name": "", "width": "100", "steps": "500",
                                       "sampler": "Euler A"})
    assert result.status_code == 400
    html = result.text
    expected = {
        "slug": "Slug may use lowercase letters, digits, _ and - only, starting with a letter or digit (e.g. my_preset)",
        "name": "Name is required",
        "width": "Width must be a multiple of 8 between 64 and 8192",
        "steps": "Steps must be a whole number from 1 to 200",
        "sampler": "Sampler may use lowercase letters, digits and _ only (e.g. euler_ancestral)",
    }
    assert {field: field_error(html, field) for field in expected} == expected   # next to each field
    assert summary(html) == expected                                             # and all listed above
    assert "5 things to fix" in html
    assert 'value="Bad Slug"' in html and 'value="500"' in html                 # the input kept
    assert rpc.presets.keys() == {SLUG}


def test_a_taken_slug_is_named_in_words(client, rpc):
    result = post(client, "/presets", {**NEW, "slug": SLUG})
    assert result.status_code == 409
    assert field_error(result.text, "slug") == f"Slug: a preset with slug &#39;{SLUG}&#39; already exists"
    assert summary(result.text) == {"slug": f"Slug: a preset with slug &#39;{SLUG}&#39; already exists"}


def test_edit_with_several_bad_fields_names_every_one(client, rpc):
    result = post(client, f"/presets/{SLUG}/edit", {**NEW, "name": "", "cfg": "99", "height": "abc"})
    assert result.status_code == 400
    assert summary(result.text) == {"name": "Name is required", "height": "Height must be a multiple of 8 between 64 and 8192",
                                    "cfg": "CFG must be a number from 0 to 40"}
    assert rpc.presets[SLUG]["name"] == "Example Preset"


def test_required_fields_are_marked_for_the_eye_and_the_browser(client, rpc):
    html = get(client, "/presets/new").text
    for name in ("slug", "name"):
        assert re.search(rf'<span>\w+ <abbr class="required-mark" title="required">\*</abbr>.*?name="{name}"[^>]* required',
                         html, re.S), name
    assert re.search(r'<select name="checkpoint" id="f-checkpoint" required>', html)
    assert re.search(r'name="presets_json"[^>]* required', html)
    for name in ("prompt", "negative", "width", "height", "steps", "cfg", "sampler"):   # they have defaults
        assert not re.search(rf'name="{name}"[^>]* required', html), name
    assert "* required" in re.sub(r"<[^>]+>", "", html)
    # the browser must not stop at the first field in its own words: the server names them all
    assert re.search(r'<form method="post" action="/presets" class="stack" novalidate>', html)


def test_generate_with_several_bad_fields_names_every_one(client, rpc):
    result = post(client, f"/presets/{SLUG}/generate", {"count": "99", "seed": "-5", "width": "100", "height": "7"})
    assert result.status_code == 400
    assert summary(result.text) == {"count": "Images must be a whole number from 1 to 20",
                                    "seed": "Seed must be a whole number from 0 to 9223372036854775807",
                                    "width": "Width must be a multiple of 8 between 64 and 2048",
                                    "height": "Height must be a multiple of 8 between 64 and 2048"}
    assert field_error(result.text, "seed") and field_error(result.text, "height")
    assert rpc.called("jobs", "create") == []


def test_a_problem_only_a_service_sees_is_shown_in_words_too(client, rpc):
    result = post(client, f"/presets/{SLUG}/generate", {"checkpoint": "Unknown/model.safetensors"})
    assert result.status_code == 400
    assert field_error(result.text, "checkpoint").startswith("Checkpoint: unknown checkpoint; known: ")


def test_import_lists_every_problem_of_a_preset(client, rpc):
    items = [{"slug": "Bad!", "name": "", "checkpoint": "x", "steps": 900}]
    html = post(client, "/presets/import", {"presets_json": json.dumps(items)}).text
    assert outcomes(html) == [("invalid", "Bad!")]
    assert re.findall(r'<li class="field-error" data-field="(\w+)">', html) == ["slug", "name", "steps"]


def test_the_import_hint_describes_what_the_export_writes(client, rpc):
    assert isinstance(json.loads(get(client, "/presets/export.json").text), list)   # an array, no wrapper
    hint = re.sub(r"\s+", " ", re.search(r'<section class="panel" id="import">.*?</p>', get(client, "/presets/new").text,
                                         re.S).group(0))
    assert 'an array of presets, <code>[{"slug": …' in hint
    assert re.search(r'as <a href="/presets/export.json" download>Export all</a> writes it \(one preset object, or', hint)
    # ... and every shape the hint names is read
    for text in (json.dumps(preset("as_array")), json.dumps({"presets": [preset("as_list")]})):
        post(client, "/presets/import", {"presets_json": f"[{text}]" if "presets" not in text else text})
    post(client, "/presets/import", {"presets_json": json.dumps(preset("one_object"))})
    assert {"as_array", "as_list", "one_object"} <= set(rpc.presets)


# --- images that arrive live: the page's own markup -------------------------------------------------

def gallery_items(html):
    return re.findall(r'<li class="gallery-item.*?</li>', html, re.S)


def test_the_gallery_fragment_is_the_pages_own_items(client, rpc):
    """preset.js adds an image that finishes while the page is open from /presets/<slug>/gallery: with
    the prompt, seed, size and checkpoint the page shows after a reload (the same template)."""
    rpc.images = [dict(IMAGE, job_id=f"{i}1111111-2222-3333-4444-555555555555", relative_path=f"presets/{SLUG}/gen_{i}.png",
                       seed=100 + i) for i in range(3)]
    page = gallery_items(get(client, f"/presets/{SLUG}").text)
    result = get(client, f"/presets/{SLUG}/gallery", params={"limit": "2"})
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/html")
    assert gallery_items(result.text) == page[:2]
    assert rpc.called("jobs", "images")[-1] == (SLUG, 2, 0)
    item = page[0]
    for text in ("in the rain", "<code data-field=\"seed\">100</code>", "832×1216", "Illustrious/<wbr>model.safetensors",
                 'name="csrf_token" value="t"', "Set as cover"):
        assert text in item, text


@pytest.mark.parametrize("limit", ["0", "61", "lots"])
def test_a_gallery_limit_out_of_range_is_a_400_not_a_500(client, rpc, limit):
    assert get(client, f"/presets/{SLUG}/gallery", params={"limit": limit}).status_code == 400


def test_the_gallery_fragment_needs_a_login(client, rpc):
    assert client.simulate_get(f"/presets/{SLUG}/gallery", headers={"Accept": "text/html"}).status_code == 303
