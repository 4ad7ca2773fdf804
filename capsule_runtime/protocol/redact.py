"""Secrets out of logs, events and system_logs: one function, used wherever text is recorded.

Tasks and errors carry secrets in predictable shapes: passwords in URLs (`https://user:pw@host`),
signed or keyed query strings (`?X-Amz-Signature=…`, `&access_token=…`), bearer and basic
credentials, `NAME=value` / `"name": "value"` pairs whose name looks secret (`*PASSWORD*`,
`*SECRET*`, `*TOKEN*`, `AWS_SECRET_ACCESS_KEY`, …), and podman's `--creds user:pw`. `redact`
replaces those values with `***`. Values the process knows to be secret (registry passwords,
S3 secret keys, instance tokens, capsule keys, secret env values of a task) are registered with
`remember_secret` and replaced wherever they appear, whatever the shape.

`RedactingFilter` does the same for every log record (message, arguments and traceback);
`install_log_redaction()` puts it on the root logger's handlers (the gateway's `tescape serve`
and the agent call it after basicConfig). Standard library only: the agent imports it too.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
_MIN_SECRET = 6  # shorter remembered values would mask ordinary words

_SECRET_WORDS = (
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API[_-]?KEY|ACCESS[_-]?KEY|PRIVATE[_-]?KEY"
    r"|CREDENTIALS?|SIGNATURE|AUTH[_-]?KEY|SESSION[_-]?KEY"
)
_SECRET_NAME = re.compile(rf"(?:{_SECRET_WORDS})", re.IGNORECASE)

_RULES: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host → scheme://user:***@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*):[^/\s@'\"]+@"), rf"\1:{MASK}@"),
    # ?X-Amz-Signature=…, &token=…, &aws_secret_access_key=… (also AWS' Credential and Sig)
    (
        re.compile(
            rf"([?&][^=&\s#'\"]*(?:{_SECRET_WORDS}|SIG|KEY)[^=&\s#'\"]*=)[^&\s#'\"]+",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE), rf"\1\2{MASK}"),
    # podman --creds user:password / --creds=user:password
    (re.compile(r"(--creds[=\s]+[^:\s]*:)\S+"), rf"\1{MASK}"),
    # NAME=value, NAME: value, "name": "value", 'name': 'value' with a secret-looking name
    (
        re.compile(
            rf"([A-Za-z0-9_-]*(?:{_SECRET_WORDS})[A-Za-z0-9_-]*['\"]?\s*[=:]\s*['\"]?)"
            r"(?!\*\*\*)[^\s'\",;&}\]]+",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
]

# A line none of the rules can touch has none of these (checked first, for speed)
_HINT = re.compile(rf"@|[?&][^=\s]*=|bearer|basic|--creds|{_SECRET_WORDS}", re.IGNORECASE)

_known: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: re.Pattern[str] | None = None


def is_secret_name(name: str) -> bool:
    """True for an env key, header or field name that looks like it holds a secret."""
    return bool(_SECRET_NAME.search(name))


def remember_secret(*values: str | None) -> None:
    """Mask these exact values from now on, wherever they appear (too short ones are ignored:
    they would mask ordinary words)."""
    global _known_pattern
    new = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET} - _known
    if not new:
        return
    with _known_lock:
        _known.update(new)
        ordered = sorted(_known, key=len, reverse=True)  # longest first: no partial masks
        _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def remember_env_secrets(env: Mapping[str, Any] | None) -> None:
    """Remember the values of a task's env whose keys look secret."""
    remember_secret(*(str(v) for k, v in (env or {}).items() if is_secret_name(str(k))))


def redact(text: str) -> str:
    """`text` with every secret it visibly carries replaced by ***."""
    if not text:
        return text
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if not _HINT.search(text):  # most lines carry none of the shapes: one scan, no rewrites
        return text
    for rule, replacement in _RULES:
        text = rule.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """Strings redacted inside dicts, lists and tuples (a copy); a dict value under a
    secret-looking key is masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v
            else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_lines(lines: Iterable[Any]) -> list[Any]:
    return [redact(line) if isinstance(line, str) else line for line in lines]


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (arguments merged) and traceback through `redact`."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error handling
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of `logger` (the root logger by default), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
