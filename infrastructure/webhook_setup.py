"""Glue between the SSRF guard and the webhook commands (kept out of the composition root to keep it small)."""

from collections.abc import Callable

from domain.errors import InvalidArgument
from infrastructure.urlguard import UnsafeUrl, parse


def url_checker(allow_private: bool) -> Callable[[str], None]:
    """The registration-time URL check the webhook commands call: raises ``InvalidArgument`` (400) if unsafe."""

    def check(url: str) -> None:
        try:
            parse(url, allow_private=allow_private)
        except UnsafeUrl as exc:
            raise InvalidArgument(str(exc)) from None

    return check
