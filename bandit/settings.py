"""Settings of the long-running commands (``cmab serve``, ``worker``, ``vw-learner``,
``broker``), from one TOML file, ``CMAB_*`` environment variables, an optional env file (the
service's) and keyword overrides (the CLI's options), in increasing priority.

One file describes a whole topology: top-level keys are shared (``bootstrap_servers``,
``topic_prefix``, ...: ``SHARED``), a section per command holds its own (``[service]``,
``[worker]``, ``[vw_learner]``, ``[broker]``). It is named by the setting ``config`` (``--config``,
``CMAB_CONFIG``). Environment variables: ``CMAB_<KEY>`` for shared keys and the service's,
``CMAB_WORKER_<KEY>``, ``CMAB_VW_LEARNER_<KEY>``, ``CMAB_BROKER_<KEY>`` for the others'.

Frozen and closed: a misspelt keyword, file key (in any section: every command checks the
whole file's names), env-file key or ``CMAB_*`` variable fails at start-up and names the
setting, instead of being silently ignored. A file value of the wrong type is refused naming
the file, the key and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bandit.engine.join import MAX_PENDING
from bandit.errors import InvalidInputError

__all__ = ["ENV_PREFIX", "SHARED", "BrokerSettings", "Settings", "VWLearnerSettings",
           "WorkerSettings"]

ENV_PREFIX = "CMAB_"
# Top-level keys of a config file, each read by the commands that have it as a setting.
SHARED = frozenset({"bootstrap_servers", "topic_prefix", "partitions", "max_pending",
                    "erasure_ledger", "otlp_endpoint"})

_CONFIG = Field(None, description="A TOML file of settings (top-level shared keys and a "
                "section per command); environment variables override it, options both.")
_TOPIC_PREFIX = Field("cmab", pattern=r"^[A-Za-z0-9_-]+$",
                      description="Topics are <prefix>.decisions, .events, .state, ...")
# The stream commands leave the prefix to streams.topics.Topics, whose error names it.
_STREAM_PREFIX = Field("cmab", min_length=1, description="Topics are <prefix>.decisions, ...")
_BOOTSTRAP = Field("127.0.0.1:9092", min_length=1, description="Kafka bootstrap address.")
_PARTITIONS = Field(4, ge=1, description="Partitions of topics the command creates if missing.")
_OTLP_ENDPOINT = Field(
    None, min_length=1, description="Export spans to this OTLP/HTTP endpoint (needs the "
    "package opentelemetry-exporter-otlp-proto-http); none: OTEL_EXPORTER_OTLP_ENDPOINT, "
    "else spans are not exported (bandit.tracing).")


class _Sourced(BaseSettings):
    """Where every command's settings come from; a subclass names its ``SECTION`` of the
    file and the ``ENV`` prefix of that section's variables."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)
    SECTION: ClassVar[str]
    ENV: ClassVar[str]

    config: Path | None = _CONFIG

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        env = [_Env(settings_cls, ENV_PREFIX, set(SHARED) | {"config"} | (
            set(cls.model_fields) if cls.ENV == ENV_PREFIX else set()))]
        if cls.ENV != ENV_PREFIX:
            env.append(_Env(settings_cls, cls.ENV, set(cls.model_fields) - SHARED - {"config"}))
        path = init_settings.init_kwargs.get("config") or _environ().get(f"{ENV_PREFIX}CONFIG")
        file = [] if path is None else [_ConfigFile(cls, Path(path))]
        # Unknown CMAB_* variables come last (lowest priority) and only as extra keys, which
        # extra="forbid" then refuses by name.
        return (init_settings, *env, dotenv_settings, *file, file_secret_settings,
                _UnknownEnvSource(settings_cls))

    @classmethod
    def own(cls) -> set[str]:
        """The keys of the command's section (its settings that are not shared)."""
        return set(cls.model_fields) - SHARED - {"config"}

    @classmethod
    def env_name(cls, key: str) -> str:
        """The environment variable of setting ``key``."""
        prefix = ENV_PREFIX if key in SHARED or key == "config" else cls.ENV
        return f"{prefix}{key}".upper()


class Settings(_Sourced):
    """The decision service (``[service]``): where it listens, who may manage it and where
    its state lives.

    ``Settings(_env_file=path)`` also reads a dotenv file (``CMAB_PORT=8080`` lines).
    """

    model_config = SettingsConfigDict(env_file=None, env_file_encoding="utf-8",
                                      env_prefix=ENV_PREFIX)
    SECTION: ClassVar[str] = "service"
    ENV: ClassVar[str] = ENV_PREFIX

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
    topic_prefix: str = _TOPIC_PREFIX
    otlp_endpoint: str | None = _OTLP_ENDPOINT


class WorkerSettings(_Sourced):
    """The stream worker (``[worker]``, ``CMAB_WORKER_*``): ``cmab worker``'s options."""

    SECTION: ClassVar[str] = "worker"
    ENV: ClassVar[str] = "CMAB_WORKER_"

    bootstrap_servers: str = _BOOTSTRAP
    topic_prefix: str = _STREAM_PREFIX
    partitions: int = _PARTITIONS
    max_pending: int = Field(
        MAX_PENDING, ge=1, description="Most decisions of one campaign waiting for their "
        "attribution windows per partition; decisions beyond go to the dead-letter topic.")
    erasure_ledger: int = Field(
        1_000_000, ge=0, description="Most learned decisions each partition keeps so that an "
        "erasure takes a subscriber's out of the model; 0 keeps none.")
    otlp_endpoint: str | None = _OTLP_ENDPOINT
    group: str = Field("cmab-worker", min_length=1, description="Consumer group of the workers.")
    max_poll_records: int = Field(5000, ge=1, description="Records per batch.")
    session_timeout_ms: int = Field(6000, ge=1000,
                                    description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(1000, ge=100,
                                       description="Consumer group heartbeat interval.")
    checkpoint_interval_ms: int = Field(
        1000, ge=0, description="Checkpoint a partition at most this often (also when a batch "
        "closed windows, on catching up and on stop); 0: after every batch.")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=10000, description="Longest time the broker may hold a fetch that found "
        "nothing new.")


class VWLearnerSettings(_Sourced):
    """The VW learner (``[vw_learner]``, ``CMAB_VW_LEARNER_*``): ``cmab vw-learner``'s options."""

    SECTION: ClassVar[str] = "vw_learner"
    ENV: ClassVar[str] = "CMAB_VW_LEARNER_"

    bootstrap_servers: str = _BOOTSTRAP
    topic_prefix: str = _STREAM_PREFIX
    partitions: int = _PARTITIONS
    group: str = Field("cmab-vw-learner", min_length=1, description="Group its .joined offsets "
                       "are committed to (lag monitoring only; restarts use its checkpoint).")
    max_poll_records: int = Field(
        20, ge=1, description=".joined records (blocks of up to 1,000 examples) per batch.")
    checkpoint_interval_ms: int = Field(
        1000, ge=0, description="Least time between checkpoints (0: after every batch).")


class BrokerSettings(_Sourced):
    """The local Kafka-compatible broker (``[broker]``, ``CMAB_BROKER_*``)."""

    SECTION: ClassVar[str] = "broker"
    ENV: ClassVar[str] = "CMAB_BROKER_"

    host: str = Field("127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(0, ge=0, le=65535, description="TCP port (0: any free one).")
    durable: Path | None = Field(
        None, description="Keep topics, records and committed offsets in this directory.")


COMMANDS: tuple[type[_Sourced], ...] = (Settings, WorkerSettings, VWLearnerSettings,
                                        BrokerSettings)


def _environ() -> dict[str, str]:
    return {key.upper(): value for key, value in os.environ.items()}


class _Env(EnvSettingsSource):
    """The environment variables ``<prefix><KEY>`` of some of the settings (``names``)."""

    def __init__(self, settings_cls: type[BaseSettings], prefix: str, names: set[str]) -> None:
        super().__init__(settings_cls, env_prefix=prefix)
        self.names = names

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in self.names:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _ConfigFile(TomlConfigSettingsSource):
    """A command's settings in a TOML file: the shared top-level keys it has, and its section.
    Every key of the file must be known (to some command), and its own values valid."""

    def __init__(self, settings_cls: type[_Sourced], path: Path) -> None:
        if not path.is_file():
            raise InvalidInputError(f"config {path}: no such file")
        try:
            super().__init__(settings_cls, toml_file=path)
        except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            raise InvalidInputError(f"config {path}: {exc}") from None
        data, mine = self.toml_data, {}
        sections = {command.SECTION: command for command in COMMANDS}
        for key, value in data.items():
            if key in sections and isinstance(value, dict):
                for inner in value:
                    if inner not in sections[key].own():
                        raise InvalidInputError(
                            f"config {path}: unknown key {key}.{inner} (expected one of "
                            f"{', '.join(sorted(sections[key].own()))})")
                if key == settings_cls.SECTION:
                    mine.update(value)
            elif key in SHARED:
                if key in settings_cls.model_fields:
                    mine[key] = value
            else:
                raise InvalidInputError(
                    f"config {path}: unknown key {key} (expected a section, "
                    f"{', '.join(sorted(sections))}, or one of {', '.join(sorted(SHARED))})")
        for key, value in mine.items():  # each value alone, so that an error names the file
            field = settings_cls.model_fields[key]
            try:
                adapter: TypeAdapter[Any] = TypeAdapter(Annotated[field.annotation, field])  # type: ignore[arg-type]
                adapter.validate_python(value)
            except ValidationError as error:
                where = key if key in SHARED else f"{settings_cls.SECTION}.{key}"
                message = error.errors(include_url=False)[0]["msg"]
                raise InvalidInputError(f"config {path}: {where}: {message}") from None
        self.toml_data = mine
        InitSettingsSource.__init__(self, settings_cls, mine)


class _UnknownEnvSource(EnvSettingsSource):
    """``CMAB_*`` environment variables that match no command's setting, e.g. ``CMAB_PROT``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        known = {command.env_name(key) for command in COMMANDS for key in command.model_fields}
        return {
            key: value for key, value in os.environ.items()
            if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
        }
