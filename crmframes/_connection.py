"""Shared by the vendor connections: secrets that never print, options from env vars."""

from __future__ import annotations

import os
from collections.abc import Mapping

from crmframes._errors import ConfigError, CredentialsError, one_of


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
    if value is not None and value != "":
        return value
    from_env = os.environ.get(env)
    return from_env if from_env else default


def secret(value: str | Secret | None, env: str) -> Secret | None:
    if isinstance(value, Secret):
        return value
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


def clean_base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must start with http:// or https://; got {url!r}")
    return url
