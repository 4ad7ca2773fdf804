"""http(s) storage: GET downloads inputs, PUT uploads outputs (e.g. to presigned URLs).

The URL is sent as the task wrote it, query string included (signatures in presigned URLs must not
be re-encoded); the one change is urllib3's: percent-escapes go out in upper case (%7e → %7E, the
same URL by RFC 3986 6.2.2.1), and characters that cannot appear in a request line are escaped.

Redirects are followed by hand, at most `max_redirects`, and every hop is checked against the
staging policy, so a redirect cannot reach an instance-metadata address. Each hop's host is
resolved once (`StagingPolicy.pin`, every address checked) and the request connects to that
address, with the original Host header, TLS SNI and certificate name: a DNS answer that changes
between the check and the connection (a rebind to a private or metadata address) is never used.
So proxies from the environment are not used either (a proxy would resolve the name itself).

Bodies stream in 1 MiB chunks both ways; a PUT carries Content-Length (presigned S3 PUTs refuse
chunked bodies). Connection errors and 5xx answers are retried `attempts` times with exponential
backoff (tenacity). DIRECTORY inputs are refused: plain HTTP has no listing to copy a tree from.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from capsule_runtime.protocol.tes import FileType
from capsule_runtime.staging.errors import SourceMissing, StagingError
from capsule_runtime.staging.policy import StagingPolicy
from capsule_runtime.staging.progress import ByteCallback
from capsule_runtime.staging.storage import Stat

CHUNK = 1 << 20
RETRY_STATUS = frozenset({500, 502, 503, 504})
Method = Literal["GET", "HEAD", "PUT"]


class _Body:
    """A file body for PUT that reports progress and tells requests its length."""

    def __init__(self, file: BinaryIO, size: int, progress: ByteCallback | None):
        self._file = file
        self._size = size
        self._progress = progress

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(CHUNK if n is None or n < 0 else n)
        if data and self._progress is not None:
            self._progress(len(data))
        return data


def _bare_host(host_header: str) -> str:
    """The host name of a Host header value (`name`, `name:port`, `[v6]:port`)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def pinned(url: str, address: str) -> tuple[str, str]:
    """(`url` with its host replaced by `address`, the Host header naming the original host).
    The rest of the URL is kept verbatim; userinfo is dropped (requests already made it an
    Authorization header)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    literal = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{literal}{port}{rest}", netloc


class PinnedAdapter(HTTPAdapter):
    """Connects to the address in the request's URL (the pinned one) while TLS names and
    verifies the host of its Host header, as it would have without pinning."""

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        host_header = request.headers.get("Host")
        if host_params.get("scheme") == "https" and host_header:
            name = _bare_host(str(host_header))
            return host_params, {**pool_kwargs, "server_hostname": name, "assert_hostname": name}
        return host_params, pool_kwargs


class HttpStorage:
    def __init__(
        self,
        policy: StagingPolicy,
        timeout: tuple[float, float] = (10.0, 300.0),
        attempts: int = 3,
        backoff: float = 0.5,
        max_redirects: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.policy = policy
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_redirects = max_redirects
        self._sleep = sleep
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no environment proxies (they resolve again), no .netrc
            adapter = PinnedAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    # -- one request, redirects and retries -----------------------------------------------------

    def _send(
        self, method: Method, url: str, body: Callable[[], _Body] | None = None
    ) -> requests.Response:
        """The final response to `method url` (streamed); the caller closes it. Connection
        errors and RETRY_STATUS answers are tried again with exponential back-off (tenacity);
        after the last try its answer is returned, its connection error raised."""

        def discard(state: RetryCallState) -> None:  # an answer tried again is never read
            assert state.outcome is not None
            if not state.outcome.failed:
                state.outcome.result().close()

        def last(state: RetryCallState) -> requests.Response:
            assert state.outcome is not None
            if exc := state.outcome.exception():
                raise StagingError(f"{method} {url}: {exc}")
            return state.outcome.result()

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(self.backoff),
            retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout))
            | retry_if_result(lambda resp: resp.status_code in RETRY_STATUS),
            before_sleep=discard,
            retry_error_callback=last,
            sleep=self._sleep,
        )
        return retrying(self._follow, method, url, body)

    def _follow(
        self, method: Method, url: str, body: Callable[[], _Body] | None
    ) -> requests.Response:
        session = self._session()
        current = url
        for _ in range(self.max_redirects + 1):
            data = body() if body is not None else None
            headers = {"Content-Length": str(len(data))} if data is not None else None
            try:
                request = session.prepare_request(
                    requests.Request(method, current, data=data, headers=headers)
                )
            except (requests.exceptions.InvalidURL, ValueError) as exc:
                raise StagingError(f"{current}: malformed URL: {exc}") from None
            if current.isascii() and current.isprintable() and " " not in current:
                request.url = current  # verbatim: requests would re-quote some escapes
            self._pin(request, current)
            resp = session.send(
                request, stream=True, timeout=self.timeout, allow_redirects=False, proxies={}
            )
            if not resp.is_redirect:
                return resp
            location = resp.headers.get("location", "")
            resp.close()
            if method == "PUT" and resp.status_code not in (307, 308):
                raise StagingError(f"PUT {url}: redirected with HTTP {resp.status_code}")
            current = urljoin(current, location)
        raise StagingError(f"{method} {url}: more than {self.max_redirects} redirects")

    def _pin(self, request: requests.PreparedRequest, url: str) -> None:
        """Point `request` at the one checked address of its host (resolved here, once)."""
        prepared = str(request.url)
        try:
            parts = urlsplit(prepared)
            host, _ = parts.hostname, parts.port  # .port raises for a malformed port
        except ValueError as exc:
            raise StagingError(f"{url}: malformed URL: {exc}") from None
        if not host:
            raise StagingError(f"{url}: the URL names no host")
        address = self.policy.pin(host, url)
        request.url, request.headers["Host"] = pinned(prepared, address)

    # -- Storage --------------------------------------------------------------------------------

    def stat(self, url: str) -> Stat | None:
        resp = self._send("HEAD", url)
        with contextlib.closing(resp):
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise StagingError(f"HEAD {url}: HTTP {resp.status_code}")
            length = resp.headers.get("content-length")
            return Stat(is_dir=False, size=int(length) if length and length.isdigit() else None)

    def get(
        self, url: str, dest: Path, kind: FileType, progress: ByteCallback | None = None
    ) -> int:
        if kind == "DIRECTORY":
            raise StagingError(
                f"{url}: DIRECTORY inputs over http(s) are not supported (HTTP has no listing)"
            )
        for attempt in range(self.attempts):
            resp = self._send("GET", url)
            with contextlib.closing(resp):
                if resp.status_code == 404:
                    raise SourceMissing(f"GET {url}: HTTP 404 (not found)")
                if resp.status_code != 200:
                    raise StagingError(f"GET {url}: HTTP {resp.status_code}")
                total = 0
                try:
                    with open(dest, "wb") as out:
                        for chunk in resp.iter_content(CHUNK):
                            out.write(chunk)
                            total += len(chunk)
                            if progress is not None:
                                progress(len(chunk))
                except requests.RequestException as exc:
                    if attempt + 1 == self.attempts:
                        raise StagingError(f"GET {url}: interrupted: {exc}") from None
                    continue
                return total
        raise AssertionError("unreachable")

    def put(self, src: Path, url: str, progress: ByteCallback | None = None) -> int:
        size = src.stat().st_size
        with open(src, "rb") as file:

            def body() -> _Body:
                file.seek(0)
                return _Body(file, size, progress)

            resp = self._send("PUT", url, body)
        with contextlib.closing(resp):
            if resp.status_code >= 300:
                raise StagingError(f"PUT {url}: HTTP {resp.status_code}")
        return size
