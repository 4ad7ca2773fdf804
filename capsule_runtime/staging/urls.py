"""Task URLs: their scheme, the local path of a bare path or file:// URL, s3 bucket and key, and
the URL of a file inside a directory URL (directory and wildcard outputs).

Bare absolute paths are the `file` scheme. file:// and http(s):// URLs are percent-encoded (the
path is decoded to read it, and each added segment is encoded); s3:// keys are taken as written,
the way the AWS CLI and Nextflow write them.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from capsule_runtime.staging.errors import StagingError

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(url: str) -> str:
    """'file' for a bare absolute path, else the URL's scheme in lower case."""
    if url.startswith("/"):
        return "file"
    match = SCHEME.match(url)
    if not match:
        raise StagingError(f"{url!r} is neither an absolute path nor a URL with a scheme")
    return match.group(1).lower()


def local_path(url: str) -> str:
    """The absolute local path named by a bare path or a file:// URL."""
    if url.startswith("/"):
        return url
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        raise StagingError(f"{url}: not a local path")
    if parts.netloc not in ("", "localhost"):
        raise StagingError(f"{url}: file:// URLs naming a host ({parts.netloc}) are not supported")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StagingError(f"{url}: the file:// URL has no absolute path")
    return path


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URL; the key may be empty (the whole bucket)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise StagingError(f"{url}: an s3 URL needs a bucket (s3://bucket/key)")
    key = url.split("://", 1)[1][len(parts.netloc) :].lstrip("/")
    return parts.netloc, key


def child_url(base: str, relative: str) -> str:
    """The URL of `relative` (a POSIX path without '..') inside the directory URL `base`."""
    if not relative:
        return base
    scheme = scheme_of(base)
    raw = scheme == "s3" or base.startswith("/")
    segment = relative if raw else quote(relative, safe="/")
    if scheme in ("http", "https"):
        parts = urlsplit(base)
        path = parts.path.rstrip("/") + "/" + segment
        return parts._replace(path=path).geturl()
    return base.rstrip("/") + "/" + segment
