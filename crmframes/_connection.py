"""Shared by the vendor connections: secrets that never print, options from env vars."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Self
from urllib.parse import urlsplit

from crmframes._errors import ConfigError, CredentialsError, one_of

if TYPE_CHECKING:
    from crmframes._flow import Reply, Request


class Secret:
    """A credential that shows as '***' in every repr, str and f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __reduce__(self) -> str:  # never pickle a credential into a file by accident
        raise TypeError("a Secret cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def option(value: str | None, env: str, default: str | None = None) -> str | None:
    """An argument, else the environment variable, else the default (empty counts as unset)."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{env.split('_', 1)[1].lower()} must be a string; got {value!r}")
    if value is not None and value != "":
        return value
    from_env = os.environ.get(env)
    return from_env if from_env else default


def secret(value: str | Secret | None, env: str, argument: str | None = None) -> Secret | None:
    if isinstance(value, Secret):
        return value
    if value is not None and not isinstance(value, str):  # the value is a secret: never echo it
        name = argument or env.split("_", 1)[1].lower()
        raise ConfigError(f"{name} must be a string; got a {type(value).__name__}")
    raw = option(value, env)
    return Secret(raw) if raw else None


def need(value: object, argument: str, env: str, vendor: str) -> None:
    if value is None:
        raise CredentialsError(
            f"{vendor}: {argument} is not set; pass {argument}=... or set the environment "
            f"variable {env} (or use cf.sandbox() to try without an account)."
        )


def host(region: str, hosts: Mapping[str, str], what: str, env: str) -> str:
    if region not in hosts:
        raise ConfigError(one_of(region, hosts, what) + f" (argument or {env}); other hosts: base_url=...")
    return hosts[region]


def clean_base_url(url: object) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"base_url must be a URL string such as 'https://r1-api.dotdigital.com'; got {url!r}")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must start with http:// or https://; got {url!r}")
    return url


class Connection:
    """What the engine needs from a vendor connection; all of it pure (no I/O).

    A vendor module declares one subclass with ``@register_connection``; its targets are
    registered as ``"<key>.<method>"``, where ``method`` is the connection method that builds
    the target. The CLI, ``cf.resume``, the sandbox and the tests find both registries."""

    key: ClassVar[str]  # the first part of its targets' names, e.g. "dotdigital"
    vendor: ClassVar[str]  # the vendor's own name, for messages
    base_url: str
    # seconds to wait for an answer before the call counts as lost (each vendor sets its own)
    timeout: ClassVar[float]

    def is_sandbox(self) -> bool:
        """True for the embedded sandbox (served on loopback only): only its answers may scale
        vendor time (``X-Sandbox-Time-Scale``); a real vendor's host can never set it."""
        host = urlsplit(self.base_url).hostname or ""
        return host in ("127.0.0.1", "localhost", "::1")

    @classmethod
    def from_environment(cls) -> Self:
        """A connection from the environment variables alone, enough to plan and validate
        (the CLI builds its targets on one)."""
        return cls()

    def account(self) -> str:
        """Who the vendor counts limits against, without secrets (budgets are per account)."""
        return f"{self.vendor}|{self.base_url}"

    def identity(self) -> str:
        """The account a baseline belongs to: it survives a password change (no secret in it)."""
        return f"{self.vendor}|{self.base_url}"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        """Headers that authenticate a call (``token`` from ``login`` where there is one)."""
        raise NotImplementedError

    credential_vars: ClassVar[tuple[str, ...]] = ()  # the environment variables that hold them

    def check_credentials(self) -> None:
        """Raise ``CredentialsError`` naming the argument and variable to set when a credential
        is missing; called before a job is journalled, so nothing is recorded that cannot run."""
        raise NotImplementedError

    def login(self) -> Request | None:
        """The call that gets a token, for vendors that use one."""
        return None

    def parse_login(self, reply: Reply) -> tuple[str, float]:
        """(token, seconds it lives) from the login answer."""
        raise NotImplementedError

    def error_message(self, reply: Reply) -> str:
        """The vendor's own words for a refused call."""
        return reply.text[:500] or f"HTTP {reply.status} with an empty body"

    def busy(self, reply: Reply) -> bool:
        """True when the answer means "too many imports are running": wait for a slot."""
        return False

    # --- the HTTP client the engine opens for this connection ---

    def close(self) -> None:
        """Close this connection's HTTP client and its sockets (it reopens if used again).

        A connection that is dropped without ``close()`` closes them when it is
        garbage-collected; ``with cf.Dotdigital(...) as dd:`` closes at the block's end."""
        from crmframes._engine import close_connection

        close_connection(self)

    async def aclose(self) -> None:
        """The async twin of ``close``."""
        from crmframes._engine import aclose_connection

        await aclose_connection(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def fingerprint(value: str | None) -> str:
    """A short one-way tag of a user name or key, so budgets can tell accounts apart."""
    return hashlib.sha256((value or "").encode()).hexdigest()[:12]


# --- registry: one connection class per vendor; duplicate keys fail loudly ---------------

_CONNECTIONS: dict[str, type[Connection]] = {}


def register_connection(cls: type[Connection]) -> type[Connection]:
    if cls.key in _CONNECTIONS and _CONNECTIONS[cls.key] is not cls:
        raise ConfigError(f"connection {cls.key!r} is declared twice")
    _CONNECTIONS[cls.key] = cls
    return cls


def connections() -> dict[str, type[Connection]]:
    """Every registered connection class by key (``"dotdigital"`` → ``Dotdigital``)."""
    import crmframes.vendors  # noqa: F401  (declarations register themselves)

    return dict(sorted(_CONNECTIONS.items()))


def connection_class(name: str) -> type[Connection]:
    """A connection class by its key (``"dotdigital"``) or class name (``"Dotdigital"``, as the
    journal records it)."""
    for key, cls in connections().items():
        if name in (key, cls.__name__):
            return cls
    known = ", ".join(connections())
    raise ConfigError(f"unknown vendor {name!r}; known: {known}")
