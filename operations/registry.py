"""Every GAZE service by name: where its nameko class is, and whether it owns a Postgres schema (each
service owns one, named after it, with its SQL migrations beside its code). The one place that names
them all: the runner, the migrations and the CLI read it; nothing under services/ or shared/ does."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    name: str
    module: str | None          # its nameko service class lives here (None: not a nameko service)
    class_name: str | None
    migrates: bool              # owns the Postgres schema `name`, migrated from services/<name>/migrations

    @property
    def migrations_dir(self) -> Path:
        return ROOT / "services" / self.name / "migrations"

    def nameko_class(self):
        return getattr(importlib.import_module(self.module), self.class_name)


SERVICES = {service.name: service for service in (
    Service("gateway", None, None, migrates=True),   # the HTTP gateway, served by gunicorn
    Service("presets", "services.presets.service", "PresetsService", migrates=True),
    Service("jobs", "services.jobs.service", "JobsService", migrates=True),
    Service("generator", "services.generator.service", "GeneratorService", migrates=False),
    Service("webhooks", "services.webhooks.service", "WebhooksService", migrates=True),
)}
NAMEKO_SERVICES = tuple(name for name, service in SERVICES.items() if service.module)
MIGRATING_SERVICES = tuple(name for name, service in SERVICES.items() if service.migrates)
