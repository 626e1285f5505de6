"""The console's way to metering's items API (SPEC §10): the pages read items through the console
(one origin, one key), and each read is forwarded with the caller's own `Authorization` header,
so metering decides again, itself, which client the key may read.

What metering answers about the request (200, 403, 404, 422) is relayed as it is. Metering
unreachable, too slow (`CONSOLE_METERING_TIMEOUT_SECONDS`) or answering anything else (starting:
503; a failure: 5xx) is `MeteringUnavailable`, which the routes answer 503 with `Retry-After`:
never a 500 of the console's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx

log = logging.getLogger(__name__)

#: What metering answers about the request itself: relayed to the caller unchanged.
RELAYED_STATUSES: Final = frozenset({200, 403, 404, 422})


class MeteringUnavailable(Exception):
    """Metering did not answer the read (unreachable, too slow, or failing): retry later."""


@dataclass(frozen=True)
class Relayed:
    """Metering's answer, as it is relayed."""

    status: int
    body: bytes
    media_type: str


class MeteringItems:
    """Reads of metering's `/v1/items`, one HTTP client kept open (started in the lifespan)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout_seconds,
            transport=self._transport,
            follow_redirects=False,
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get(self, path: str, *, params: Mapping[str, str], authorization: str) -> Relayed:
        """GET `path` on metering with the caller's `authorization`; metering's answer when it is
        about the request, else MeteringUnavailable."""
        if self._client is None:
            raise MeteringUnavailable("the console's metering client is not started")
        try:
            response = await self._client.get(
                path,
                params=dict(params),
                headers={"Authorization": authorization, "Accept": "application/json"},
            )
        except httpx.TimeoutException as error:
            raise MeteringUnavailable(
                f"metering did not answer within {self.timeout_seconds:g} s"
            ) from error
        except httpx.HTTPError as error:
            raise MeteringUnavailable(
                f"metering at {self.base_url} is unreachable ({type(error).__name__})"
            ) from error
        if response.status_code not in RELAYED_STATUSES:
            log.warning(
                "metering answered a relayed read with an unexpected status",
                extra={"status": response.status_code, "path": path},
            )
            raise MeteringUnavailable(f"metering answered {response.status_code}")
        media_type = response.headers.get("content-type", "application/json").split(";")[0]
        return Relayed(response.status_code, response.content, media_type.strip())
