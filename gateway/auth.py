"""Who is calling: `auth.mode` none | basic | bearer (static tokens and/or OIDC JWTs).

A `Principal` owns the tasks it creates; it sees and cancels only those unless it is an admin
(Funnel's `TaskAccess: OwnerOrAdmin`). With `auth.mode: none` every caller is the anonymous admin
and any Authorization header is ignored (Snakemake sends `Basic None:None` with no credentials).

Guessing is slowed down: after `auth.max_failed_logins` failures within
`auth.failed_login_window_seconds` for one user name from one client address, that pair is answered
429 with Retry-After until the oldest failure leaves the window. A user name that does not exist
costs the same password hash as one that does, so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.config import AuthConfig, BasicUser


@dataclass(frozen=True)
class Principal:
    user: str
    admin: bool

    @property
    def owner_filter(self) -> str | None:
        """The owner to restrict queries to, or None for an admin (sees every task)."""
        return None if self.admin else self.user


ANONYMOUS = Principal(user="", admin=True)


class AuthError(Exception):
    """401: missing or wrong credentials. `challenge` goes into WWW-Authenticate."""

    def __init__(self, message: str, challenge: str):
        super().__init__(message)
        self.challenge = challenge


class TooManyFailures(Exception):
    """429: too many failed logins for this user from this address; try after `retry_after` s."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginThrottle:
    """Failed logins per (user, client address) in a sliding window. At most `max_keys` pairs
    are remembered (the least recently failed are forgotten first), so a flood of made-up names
    cannot grow it without bound."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: tuple[str, str]) -> None:
        """Raise TooManyFailures while `key` has used up its failures in the window."""
        with self._lock:
            times = self._recent(key)
            if times is not None and len(times) >= self.max_failures:
                wait = times[0] + self.window - self.clock()
                raise TooManyFailures(max(1, math.ceil(wait)))

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            times = self._recent(key) or deque()
            times.append(self.clock())
            self._failures[key] = times
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: tuple[str, str]) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


def _dummy_hash(users: list[BasicUser]) -> str:
    """A hash of a random password made the same way as the configured users' (method and
    cost), checked when a name is unknown so that it takes as long as a wrong password."""
    method = users[0].password_hash.split("$", 1)[0] if users else "scrypt"
    try:
        return generate_password_hash(secrets.token_urlsafe(16), method=method)
    except (ValueError, TypeError):
        return generate_password_hash(secrets.token_urlsafe(16))


class Authenticator:
    def __init__(self, cfg: AuthConfig, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.users = {u.name: u for u in cfg.users}
        self.dummy_hash = _dummy_hash(cfg.users) if cfg.mode == "basic" else ""
        self.throttle = LoginThrottle(
            cfg.max_failed_logins, cfg.failed_login_window_seconds, clock=clock
        )
        self.jwks: jwt.PyJWKSet | None = None
        if cfg.oidc is not None:
            self.jwks = jwt.PyJWKSet.from_dict(json.loads(Path(cfg.oidc.jwks_file).read_text()))

    @property
    def challenge(self) -> str:
        scheme = "Basic" if self.cfg.mode == "basic" else "Bearer"
        return f'{scheme} realm="{self.cfg.realm}"'

    def authenticate(self, authorization: str | None, client: str = "") -> Principal:
        """`client`: the caller's address, which failed logins are counted by (with the user)."""
        if self.cfg.mode == "none":
            return ANONYMOUS
        if not authorization:
            raise AuthError("authentication required", self.challenge)
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if self.cfg.mode == "basic" and scheme == "basic":
            return self._basic(credentials.strip(), client)
        if self.cfg.mode == "bearer" and scheme == "bearer":
            key = ("", client)  # a token names no user until it is verified
            self.throttle.check(key)
            try:
                return self._bearer(credentials.strip())
            except AuthError:
                self.throttle.failed(key)
                raise
        raise AuthError(
            f"this server expects {self.challenge.split()[0]} credentials", self.challenge
        )

    def _basic(self, credentials: str, client: str) -> Principal:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("malformed Basic credentials", self.challenge) from None
        name, _, password = decoded.partition(":")
        key = (name, client)
        self.throttle.check(key)
        user = self.users.get(name)
        # an unknown name costs one hash too: the answer's timing must not say which names exist
        matches = check_password_hash(user.password_hash if user else self.dummy_hash, password)
        if user is None or not matches:
            self.throttle.failed(key)
            raise AuthError("wrong user name or password", self.challenge)
        self.throttle.succeeded(key)
        return Principal(user.name, user.admin)

    def _bearer(self, token: str) -> Principal:
        digest = token_sha256(token)
        for static in self.cfg.tokens:
            if hmac.compare_digest(digest, static.token_sha256.lower()):
                return Principal(static.user, static.admin)
        if self.jwks is not None and self.cfg.oidc is not None:
            return self._jwt(token)
        raise AuthError("unknown bearer token", self.challenge)

    def _jwt(self, token: str) -> Principal:
        oidc = self.cfg.oidc
        assert oidc is not None and self.jwks is not None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            keys = [k for k in self.jwks.keys if kid is None or k.key_id == kid]
            if not keys:
                raise AuthError("token signed with an unknown key", self.challenge)
            claims = jwt.decode(
                token,
                keys[0],
                algorithms=oidc.algorithms,
                audience=oidc.audience,
                issuer=oidc.issuer,
                options={"require": ["exp", "iss"], "verify_aud": oidc.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}", self.challenge) from None
        user = claims.get(oidc.user_claim)
        if not isinstance(user, str) or not user:
            raise AuthError(f"token has no {oidc.user_claim!r} claim", self.challenge)
        granted = claims.get(oidc.admin_claim, [])
        granted = [granted] if isinstance(granted, str) else granted
        admin = any(v in granted for v in oidc.admin_values)
        return Principal(user, admin)
