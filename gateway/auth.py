"""Who is calling: `auth.mode` none | basic | bearer (static tokens and/or OIDC JWTs).

A `Principal` owns the tasks it creates; it sees and cancels only those unless it is an admin
(Funnel's `TaskAccess: OwnerOrAdmin`). With `auth.mode: none` every caller is the anonymous admin
and any Authorization header is ignored (Snakemake sends `Basic None:None` with no credentials).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import jwt
from werkzeug.security import check_password_hash

from gateway.config import AuthConfig


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


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, cfg: AuthConfig):
        self.cfg = cfg
        self.users = {u.name: u for u in cfg.users}
        self.jwks: jwt.PyJWKSet | None = None
        if cfg.oidc is not None:
            self.jwks = jwt.PyJWKSet.from_dict(json.loads(Path(cfg.oidc.jwks_file).read_text()))

    @property
    def challenge(self) -> str:
        scheme = "Basic" if self.cfg.mode == "basic" else "Bearer"
        return f'{scheme} realm="{self.cfg.realm}"'

    def authenticate(self, authorization: str | None) -> Principal:
        if self.cfg.mode == "none":
            return ANONYMOUS
        if not authorization:
            raise AuthError("authentication required", self.challenge)
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if self.cfg.mode == "basic" and scheme == "basic":
            return self._basic(credentials.strip())
        if self.cfg.mode == "bearer" and scheme == "bearer":
            return self._bearer(credentials.strip())
        raise AuthError(
            f"this server expects {self.challenge.split()[0]} credentials", self.challenge
        )

    def _basic(self, credentials: str) -> Principal:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("malformed Basic credentials", self.challenge) from None
        name, _, password = decoded.partition(":")
        user = self.users.get(name)
        if user is None or not check_password_hash(user.password_hash, password):
            raise AuthError("wrong user name or password", self.challenge)
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
