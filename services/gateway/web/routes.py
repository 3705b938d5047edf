"""Every web UI route in one table."""
from __future__ import annotations

from services.gateway.web.auth import LoginResource, LogoutResource
from services.gateway.web.jobs_api import UiJobCancelResource, UiJobsResource
from services.gateway.web.library import LibraryResource
from services.gateway.web.presets import (PresetCoverClearResource, PresetCoverResource, PresetDeleteResource,
                                          PresetEditResource, PresetGalleryResource, PresetGenerateResource,
                                          PresetNewResource, PresetResource, PresetsCollectionResource,
                                          PresetsExportResource, PresetsImportResource)
from services.gateway.web.render import ASSETS_PREFIX, STATIC
from services.gateway.web.thumbnails import ThumbnailResource
from services.gateway.web.queue import QueueResource
from services.gateway.web.settings import (ApiGuideResource, ApiKeysResource, RegenerateKeyResource,
                                           RevokeKeyResource, RotateWebhookSecretResource, SettingsResource)


def mount(app, settings, rpc, keys, admin, jobs, presets) -> None:
    app.add_route("/login", LoginResource(admin, settings))
    app.add_route("/logout", LogoutResource(admin, settings))
    app.add_route("/", LibraryResource(rpc, presets))
    app.add_route("/ui/jobs", UiJobsResource(rpc, jobs))
    app.add_route("/ui/jobs/{job_id}/cancel", UiJobCancelResource(jobs))
    app.add_route("/presets", PresetsCollectionResource(rpc))
    app.add_route("/presets/new", PresetNewResource(rpc))
    app.add_route("/presets/import", PresetsImportResource(rpc))
    app.add_route("/presets/export.json", PresetsExportResource(rpc))
    app.add_route("/presets/{slug}", PresetResource(rpc, settings))
    app.add_route("/presets/{slug}/generate", PresetGenerateResource(rpc, settings))
    app.add_route("/presets/{slug}/gallery", PresetGalleryResource(rpc))
    app.add_route("/presets/{slug}/cover", PresetCoverResource(rpc))
    app.add_route("/presets/{slug}/cover/clear", PresetCoverClearResource(rpc))
    app.add_route("/presets/{slug}/edit", PresetEditResource(rpc))
    app.add_route("/presets/{slug}/delete", PresetDeleteResource(rpc))
    app.add_static_route(ASSETS_PREFIX, str(STATIC))
    app.add_route("/thumbs/{size:int}/{relative_path:path}", ThumbnailResource.from_settings(settings))
    app.add_route("/queue", QueueResource(rpc, settings))
    app.add_route("/settings", SettingsResource(keys, settings, rpc))
    app.add_route("/settings/api-guide", ApiGuideResource())
    app.add_route("/settings/api-keys", ApiKeysResource(keys, settings, rpc))
    app.add_route("/settings/api-keys/regenerate", RegenerateKeyResource(keys, settings, rpc))
    app.add_route("/settings/api-keys/{key_id:int}/revoke", RevokeKeyResource(keys))
    app.add_route("/settings/webhook-secrets/rotate", RotateWebhookSecretResource(rpc))
