"""How a component reaches the cluster: brokers, topic prefix, TLS and SASL.

Pure configuration (pydantic, no Kafka client). :class:`ClusterAccess` defines the fields once;
:class:`KafkaConnection` adds the client id and turns them into client keyword arguments for
:mod:`streams.kafka.clients` and :mod:`streams.kafka.admin`; :class:`KafkaClientSettings`, the
base of every deployable's settings, carries the same fields as ``SLMOPS_*`` variables.
"""

from __future__ import annotations

import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.events.topics import DEFAULT_PREFIX, Catalog
from streams.kafka.errors import SettingsError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class ClusterAccess(BaseModel):
    """Where the brokers are and how to authenticate to them; everything but the client's name.

    Both :class:`KafkaConnection` and :class:`KafkaClientSettings` inherit these fields, so a
    field added here is settable from every deployable's settings and environment at once.

    TLS: ``security_protocol="SSL"`` (or ``SASL_SSL``) with ``ssl_cafile`` for a private CA
    (the system's CAs otherwise) and ``ssl_certfile``/``ssl_keyfile`` for mutual TLS.
    SASL: ``SASL_SSL`` (or ``SASL_PLAINTEXT`` on a trusted network) with a mechanism,
    username and password. docs/security.md shows the broker side.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="host:port[,host:port...] of the brokers"
    )
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="prefix of every topic name")
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT"
    )
    ssl_cafile: Path | None = Field(default=None, description="PEM bundle of trusted CAs")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (mTLS)")
    ssl_keyfile: Path | None = Field(default=None, description="client private key (mTLS)")
    ssl_check_hostname: bool = Field(
        default=True, description="a broker's certificate must name the host it was reached at"
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_*"
    )
    sasl_username: str | None = Field(default=None, description="SASL user")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password")

    def cluster_fields(self) -> dict[str, Any]:
        """These fields alone, to build another model that carries them (settings, connection)."""
        return {name: getattr(self, name) for name in ClusterAccess.model_fields}


class KafkaConnection(ClusterAccess):
    """How one client reaches the cluster: the access fields plus the name the brokers log."""

    client_id: str = Field(default="slmops", description="client id the brokers log")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConnection:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        if not sasl and self.sasl_mechanism:
            raise ValueError(
                f"sasl_mechanism is set but security_protocol is {self.security_protocol}"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the clients, or None for plaintext listeners."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile and self.ssl_keyfile:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Security settings as aiokafka's producer, consumer and admin client take them."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.sasl_mechanism:
            assert self.sasl_password is not None  # checked by the validator
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs

    def catalog(self) -> Catalog:
        return Catalog(self.topic_prefix)


class KafkaClientSettings(ClusterAccess, BaseSettings):
    """The base of every deployable's settings: the cluster fields, read from ``SLMOPS_*``.

    Constructing one reads only its arguments, so settings built in library code or in tests
    do not change with a developer's shell. Entry points (the CLI commands) call
    :meth:`from_env` instead: it reads ``SLMOPS_BOOTSTRAP_SERVERS``, ``SLMOPS_SECURITY_PROTOCOL``,
    ... and, where a subclass sets ``env_nested_delimiter``, nested names such as
    ``SLMOPS_RULES__MIN_QUALITY``.
    """

    # forbid: with the environment out of the way, an unknown keyword is a typo, not a variable.
    model_config = SettingsConfigDict(env_prefix="SLMOPS_", frozen=True, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _READING_ENV.get():
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        return (init_settings,)

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The settings the ``SLMOPS_*`` variables give, ``overrides`` (the flags) winning.

        For entry points only. A nested override is merged into the environment's value:
        ``from_env(rules={"min_quality": 0.9})`` keeps ``SLMOPS_RULES__MIN_FEEDBACK``.
        """
        token = _READING_ENV.set(True)
        try:
            return cls(**overrides)
        finally:
            _READING_ENV.reset(token)

    @classmethod
    def from_flags(cls, component: str, **overrides: Any) -> Self:
        """:meth:`from_env` for a command line: refused values raise :class:`SettingsError`,
        which names each field, its variable and why (pydantic's error is for developers)."""
        try:
            return cls.from_env(**overrides)
        except ValidationError as exc:
            raise SettingsError.from_validation(component, exc.errors(), cls.env_name) from exc

    @classmethod
    def env_name(cls, path: str) -> str:
        """The variable :meth:`from_env` reads for a field, a nested one named by a dotted path.

        ``rules.min_quality`` -> ``SLMOPS_RULES__MIN_QUALITY``: help texts print this name, so
        they name what really works.
        """
        _field(cls, path)
        parts = path.split(".")
        delimiter = cls.model_config.get("env_nested_delimiter") or ""
        if len(parts) > 1 and not delimiter:
            raise ValueError(f"{cls.__name__} reads no nested variables, so none for {path}")
        return (cls.model_config.get("env_prefix", "") + delimiter.join(parts)).upper()

    @classmethod
    def field_help(cls, path: str, *, env: bool = True) -> str:
        """``--help`` text of the flag that sets ``path``: its description, default and variable.

        Taken from the field, so a flag's help cannot drift from the code it configures.
        """
        info, default = _field(cls, path)
        parts = [info.description] if info.description else []
        # "unset: <what that means>" in a description already says what the default does.
        if default is not PydanticUndefined and not (
            default is None and "unset:" in "".join(parts)
        ):
            parts.append(f"default {_shown(default)}")
        text = "; ".join(parts)
        if env:
            # pydantic-settings decodes a list, set, dict or model field's variable as JSON.
            complex_ = get_origin(info.annotation) in (list, tuple, set, frozenset, dict) or (
                isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
            )
            text += f" (env {cls.env_name(path)}{', as JSON' if complex_ else ''})"
        return text.replace("%", "%%")  # argparse expands %-formats in help texts

    def kafka_connection(
        self, client_id: str, bootstrap_servers: str | None = None
    ) -> KafkaConnection:
        access = self.cluster_fields()
        if bootstrap_servers:
            access["bootstrap_servers"] = bootstrap_servers
        return KafkaConnection(**access, client_id=client_id)


# Whether the settings being built read the environment: set by from_env, for one call only.
_READING_ENV: ContextVar[bool] = ContextVar("slmops_settings_reading_env", default=False)


def _field(cls: type[BaseModel], path: str) -> tuple[FieldInfo, Any]:
    """The field at a dotted path and its default (looked up inside a nested model's default)."""
    model: type[BaseModel] | None = cls
    default: Any = PydanticUndefined
    info: FieldInfo | None = None
    for depth, part in enumerate(path.split(".")):
        if model is None or part not in model.model_fields:
            raise KeyError(f"{cls.__name__} has no field {path}")
        info = model.model_fields[part]
        if depth > 0 and isinstance(default, BaseModel):
            default = getattr(default, part)
        else:
            default = info.get_default(call_default_factory=True)
        nested = info.annotation
        model = nested if isinstance(nested, type) and issubclass(nested, BaseModel) else None
    assert info is not None  # a path has at least one part
    return info, default


def _shown(value: Any) -> str:
    """A default as a user would type it on the command line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, SecretStr):
        return "(hidden)"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return ",".join(_shown(v) for v in items) or "empty"
    if isinstance(value, dict):
        return ",".join(f"{k}={_shown(v)}" for k, v in value.items()) or "empty"
    return str(value)
