"""The fleet's network to the release repository: one connection pool, one view per device.

Every agent's update cycle builds a python-tuf ``Updater`` that fetches through a
``FetcherInterface``. The fleet gives each agent a :class:`DeviceFetcher`: a thin view that
counts the bytes its device fetched (metadata and targets apart) and fails the way a fault
says (its device offline, or the repository out: a connection error, which python-tuf turns
into a ``DownloadError`` and the agent into ``offline``), and otherwise fetches through the
fleet's one :class:`PooledFetcher` (a urllib3 pool sized to the fleet's worker threads, so
N agents keep a few keep-alive connections, not N).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

USER_AGENT = "fieldloop-fleet/1"


class PooledFetcher(FetcherInterface):
    """python-tuf's fetch over one urllib3 ``PoolManager`` shared by every device of the fleet.

    Args:
        connections: connections kept per host (the worker threads that fetch at once).
        socket_timeout_s: connect and between-bytes timeout (seconds), as the agent's own fetcher.
        chunk_bytes: read size of a download.
    """

    def __init__(self, connections: int, socket_timeout_s: float = 10.0, chunk_bytes: int = 65536) -> None:
        import urllib3

        self._pool = urllib3.PoolManager(maxsize=connections, block=False, headers={"User-Agent": USER_AGENT})
        self._timeout = urllib3.Timeout(socket_timeout_s)
        self._chunk = chunk_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        import urllib3

        try:
            response = self._pool.request("GET", url, preload_content=False, timeout=self._timeout)
        except urllib3.exceptions.TimeoutError as e:
            raise exceptions.SlowRetrievalError from e
        if response.status >= 400:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return self._chunks(response)

    def _chunks(self, response: Any) -> Iterator[bytes]:
        import urllib3

        try:
            yield from response.stream(self._chunk)
        except urllib3.exceptions.TimeoutError as e:
            raise exceptions.SlowRetrievalError from e
        finally:
            response.release_conn()

    def close(self) -> None:
        self._pool.clear()


class DeviceFetcher(FetcherInterface):
    """One device's view of the fleet's fetcher (see the module docstring).

    Args:
        shared: the fleet's fetcher.
        reachable: called before each fetch; a message (why the repository is unreachable) or None.
    """

    def __init__(self, shared: FetcherInterface, reachable: Callable[[], str | None]) -> None:
        self._shared, self._reachable = shared, reachable
        self.metadata_bytes = 0
        self.target_bytes = 0
        self.requests = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        why = self._reachable()
        if why is not None:
            raise ConnectionError(f"{why}: {url} not fetched")
        self.requests += 1
        return self._counted(self._shared._fetch(url), "/metadata/" in url)

    def _counted(self, chunks: Iterator[bytes], metadata: bool) -> Iterator[bytes]:
        for chunk in chunks:
            if metadata:
                self.metadata_bytes += len(chunk)
            else:
                self.target_bytes += len(chunk)
            yield chunk
