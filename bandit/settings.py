"""Settings of the decision service, from ``CMAB_*`` environment variables, an optional env file
and keyword overrides (the CLI's options), in increasing priority.

Frozen and closed: a misspelt keyword, env-file key or ``CMAB_*`` variable fails at start-up and
names the setting, instead of being silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bandit.engine.join import MAX_PENDING

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "CMAB_"


class Settings(BaseSettings):
    """Where the service listens, who may manage it and where its state lives.

    ``Settings(_env_file=path)`` also reads a dotenv file (``CMAB_PORT=8080`` lines).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, env_file=None,
        env_file_encoding="utf-8",
    )

    host: str = Field("127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    api_token: SecretStr | None = Field(
        None, min_length=1,
        description="When set, management routes need `Authorization: Bearer <token>`.")
    ingest_token: SecretStr | None = Field(
        None, min_length=1,
        description="When set, `POST /v1/events` needs `Authorization: Bearer <token>` (this "
        "token, not the management one); decisions stay open.")
    max_body_bytes: int = Field(
        256 * 1024 * 1024, ge=1,
        description="Largest request body (an NDJSON send of 280,000 subscribers with 19 "
        "numeric features is about 95 MB).")
    max_batch_rows: int = Field(
        280_000, ge=1,
        description="Most requests in one batch decision body (NDJSON lines; a JSON body also "
        "stops at its schema's 100,000), counted while the body arrives.")
    max_pending: int = Field(
        MAX_PENDING, ge=1,
        description="Most decisions of one campaign waiting in the attribution join (per "
        "partition in stream mode): impressions beyond it are refused (503 over HTTP, the "
        "dead-letter topic in the worker) until windows close.")
    erasure_ledger: int = Field(
        1_000_000, ge=0,
        description="Most learned decisions kept (as the columns learned, in memory and in the "
        "snapshot) so that `DELETE /v1/subjects/{id}` can take a subscriber's out of the model; "
        "beyond it the oldest are dropped and an erasure says its ledger is incomplete. Per "
        "decision 8 bytes per context column, 12 per slot and about 70 besides; 0 keeps none.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must deliver a request's headers within this "
        "many seconds of opening or of the request's first byte, else it is closed.")
    body_timeout_s: float = Field(
        120.0, gt=0, description="A request's whole body must arrive within this many seconds "
        "of its headers, else the connection is closed.")
    seed: int = Field(0, ge=0, description="Seed of the engine's policies' random draws.")
    id_seed: int | None = Field(
        None, ge=0, description="Reproducible runs only (the demo, tests): decision ids from a "
        "generator with this seed instead of the operating system's randomness. Never where "
        "events are kept: a restart or a replica with the same id seed issues the same ids.")
    snapshot_path: Path | None = Field(
        None, description="Engine snapshot: loaded at start if it exists, written at shutdown.")

    @field_validator("snapshot_path")
    @classmethod
    def _writable_place(cls, path: Path | None) -> Path | None:
        # Found out at start-up, not when the shutdown tries to write the snapshot.
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"directory {path.parent} does not exist")
        if path is not None and path.is_dir():
            raise ValueError(f"{path} is a directory")
        return path
    bootstrap_servers: str | None = Field(
        None, min_length=1, description="Kafka bootstrap servers (host:port, comma-separated): "
        "campaigns and events go to the stream, the model follows its state topic.")
    decision_log_capacity: int = Field(
        1_000_000, ge=1, description="Stream mode: most decisions waiting to be written to "
        "<prefix>.decisions; while the broker cannot take them, decisions beyond it are "
        "decided but not logged (counted in cmab_decisions_unlogged_total).")
    topic_prefix: str = Field("cmab", pattern=r"^[A-Za-z0-9_-]+$",
                              description="Topics are <prefix>.impressions, .clicks, .state, ...")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Unknown CMAB_* variables come last (lowest priority) and only as extra keys, which
        # extra="forbid" then refuses by name.
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                _UnknownEnvSource(settings_cls))


class _UnknownEnvSource(EnvSettingsSource):
    """``CMAB_*`` environment variables that match no setting, e.g. ``CMAB_PROT``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        known = {f"{ENV_PREFIX}{name}".upper() for name in self.settings_cls.model_fields}
        return {
            key: value for key, value in os.environ.items()
            if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
        }
