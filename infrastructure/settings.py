"""Settings from ``KEYLEDGER_*`` environment variables, read once by the composition root (never at import)."""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from application.oauth.limits import AttemptLimits
from domain.policy import MAX_ACCESS_TOKEN_TTL, MAX_REFRESH_REUSE_LEEWAY, MIN_ACCESS_TOKEN_TTL, LifetimePolicy
from domain.webhooks import EXPIRY_WARNINGS_DAYS
from infrastructure.mailer import MailUrlError, parse_smtp_url


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _leeway(env: Mapping[str, str]) -> int:
    """``KEYLEDGER_REFRESH_REUSE_LEEWAY``: whole seconds, 0 (the default, strict) to ``MAX_REFRESH_REUSE_LEEWAY``."""
    name = "KEYLEDGER_REFRESH_REUSE_LEEWAY"
    if env.get(name, "").strip() in {"", "0"}:
        return 0
    value = _int(env, name, 0)
    if value > MAX_REFRESH_REUSE_LEEWAY:
        raise SettingsError(f"{name} must be between 0 and {MAX_REFRESH_REUSE_LEEWAY} seconds")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A boolean: true/1/yes or false/0/no (empty means false)."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _smtp_url(env: Mapping[str, str]) -> str | None:
    """``KEYLEDGER_SMTP_URL``: smtp:// or smtps:// (the value, which may hold a password, is never echoed)."""
    raw = env.get("KEYLEDGER_SMTP_URL") or None
    if raw is not None and not raw.startswith(("smtp://", "smtps://")):
        raise SettingsError("KEYLEDGER_SMTP_URL must start with smtp:// or smtps://")
    if raw is not None:
        try:  # read whole at start-up: a port that is not a number would otherwise fail every mailing, unrecorded
            parse_smtp_url(raw)
        except MailUrlError as exc:
            raise SettingsError(str(exc)) from None
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses or networks (CIDR), each checked."""
    items = tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingsError(f"{name} must list IP addresses or networks, got {item!r}") from None
    return items


def _access_ttl(env: Mapping[str, str], name: str, default: int) -> int:
    """An access-token lifetime, within the bounds a client's own ``access_token_ttl`` is held to (a server-wide
    default outside them would hand out what no client may ask for)."""
    value = _int(env, name, default)
    if not MIN_ACCESS_TOKEN_TTL <= value <= MAX_ACCESS_TOKEN_TTL:
        raise SettingsError(f"{name} must be between {MIN_ACCESS_TOKEN_TTL} and {MAX_ACCESS_TOKEN_TTL} seconds")
    return value


def _lifetimes(env: Mapping[str, str]) -> LifetimePolicy:
    """The token and secret lifetimes; the default secret lifetime may not exceed the maximum (it would be cut to
    it without a word)."""
    defaults = LifetimePolicy()
    lifetimes = LifetimePolicy(
        dashboard_access_token_ttl=_access_ttl(env, "KEYLEDGER_DASHBOARD_ACCESS_TOKEN_TTL",
                                               defaults.dashboard_access_token_ttl),
        client_access_token_ttl=_access_ttl(env, "KEYLEDGER_CLIENT_ACCESS_TOKEN_TTL",
                                            defaults.client_access_token_ttl),
        refresh_token_ttl=_int(env, "KEYLEDGER_REFRESH_TOKEN_TTL", defaults.refresh_token_ttl),
        refresh_family_ttl=_int(env, "KEYLEDGER_REFRESH_FAMILY_TTL", defaults.refresh_family_ttl),
        client_secret_ttl=_int(env, "KEYLEDGER_CLIENT_SECRET_TTL", defaults.client_secret_ttl),
        max_client_secret_ttl=_int(env, "KEYLEDGER_MAX_CLIENT_SECRET_TTL", defaults.max_client_secret_ttl),
        refresh_reuse_leeway=_leeway(env),
    )
    if lifetimes.client_secret_ttl > lifetimes.max_client_secret_ttl:
        raise SettingsError("KEYLEDGER_CLIENT_SECRET_TTL must not exceed KEYLEDGER_MAX_CLIENT_SECRET_TTL")
    return lifetimes


def _attempt_limits(env: Mapping[str, str]) -> AttemptLimits:
    defaults = AttemptLimits()
    return AttemptLimits(
        per_account=_int(env, "KEYLEDGER_MAX_FAILURES_PER_ACCOUNT", defaults.per_account),
        per_client=_int(env, "KEYLEDGER_MAX_FAILURES_PER_CLIENT", defaults.per_client),
        per_address=_int(env, "KEYLEDGER_MAX_FAILURES_PER_ADDRESS", defaults.per_address),
        per_signup=_int(env, "KEYLEDGER_MAX_SIGNUPS_PER_ADDRESS", defaults.per_signup),
        per_lookup=_int(env, "KEYLEDGER_MAX_UNKNOWN_MEMBER_EMAILS", defaults.per_lookup),
        window=_int(env, "KEYLEDGER_FAILURE_WINDOW", defaults.window),
        lockout=_int(env, "KEYLEDGER_LOCKOUT", defaults.lockout),
    )


def _rotation(env: Mapping[str, str]) -> dict[str, int]:
    """The signing-key schedule; a key must be published before it signs, so pre-publication is shorter."""
    rotation = _int(env, "KEYLEDGER_SIGNING_KEY_ROTATION", 30 * 24 * 3600)
    prepublish = _int(env, "KEYLEDGER_SIGNING_KEY_PREPUBLISH", 24 * 3600)
    if prepublish >= rotation:
        raise SettingsError("KEYLEDGER_SIGNING_KEY_PREPUBLISH must be shorter than KEYLEDGER_SIGNING_KEY_ROTATION")
    return {"signing_key_rotation": rotation, "signing_key_prepublish": prepublish}


def _retention(env: Mapping[str, str]) -> int:
    """Days a settled notification is kept. Longer than the earliest secret-expiry warning, so a warning is never
    pruned while its secret is still live (the warning job would add it again)."""
    days = _int(env, "KEYLEDGER_NOTIFICATION_RETENTION_DAYS", 90)
    if days <= max(EXPIRY_WARNINGS_DAYS):
        raise SettingsError(f"KEYLEDGER_NOTIFICATION_RETENTION_DAYS must be more than {max(EXPIRY_WARNINGS_DAYS)}")
    return days


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. See the README's configuration table."""

    issuer: str = "http://127.0.0.1:8000"
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".keyledger")
    secret_key: str | None = None
    signing_alg: str = "ES256"
    lifetimes: LifetimePolicy = field(default_factory=LifetimePolicy)
    max_body_bytes: int = 64 * 1024
    pool_size: int = 8
    log_level: str = "INFO"
    attempt_limits: AttemptLimits = field(default_factory=AttemptLimits)
    rate_limit_prefix: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    webhook_allow_private: bool = False
    webhook_timeout: int = 10
    webhook_lease: int = 60
    smtp_url: str | None = None
    notification_retention_days: int = 90
    signing_key_rotation: int = 30 * 24 * 3600
    signing_key_prepublish: int = 24 * 3600

    @property
    def audience(self) -> str:
        """The API's resource identifier and every access token's ``aud``."""
        return self.issuer.rstrip("/") + "/v1"

    @property
    def embedded(self) -> bool:
        """Whether keyledger runs its own PostgreSQL (no database URL configured)."""
        return self.database_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Reads settings from ``env`` (usually ``os.environ``)."""
        alg = env.get("KEYLEDGER_SIGNING_ALG", "ES256")
        if alg not in {"ES256", "EdDSA", "RS256"}:
            raise SettingsError("KEYLEDGER_SIGNING_ALG must be one of ES256, EdDSA, RS256")
        return cls(
            issuer=env.get("KEYLEDGER_ISSUER", "http://127.0.0.1:8000").rstrip("/"),
            database_url=env.get("KEYLEDGER_DATABASE_URL") or None,
            redis_url=env.get("KEYLEDGER_REDIS_URL") or None,
            data_dir=Path(env.get("KEYLEDGER_DATA_DIR", ".keyledger")),
            secret_key=env.get("KEYLEDGER_SECRET_KEY") or None,
            signing_alg=alg,
            lifetimes=_lifetimes(env),
            max_body_bytes=_int(env, "KEYLEDGER_MAX_BODY_BYTES", 64 * 1024),
            pool_size=_int(env, "KEYLEDGER_DB_POOL_SIZE", 8),
            log_level=env.get("KEYLEDGER_LOG_LEVEL", "INFO").upper(),
            attempt_limits=_attempt_limits(env),
            rate_limit_prefix=env.get("KEYLEDGER_RATE_LIMIT_PREFIX") or None,
            trusted_proxies=_networks(env, "KEYLEDGER_TRUSTED_PROXIES"),
            webhook_allow_private=_flag(env, "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE"),
            webhook_timeout=_int(env, "KEYLEDGER_WEBHOOK_TIMEOUT", 10),
            webhook_lease=_int(env, "KEYLEDGER_WEBHOOK_LEASE", 60),
            smtp_url=_smtp_url(env),
            notification_retention_days=_retention(env),
            **_rotation(env),
        )
