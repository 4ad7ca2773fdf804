"""Authentication modes: none, basic, bearer (static tokens and OIDC JWTs from a JWKS file)."""

import base64
import json
import time
from pathlib import Path
from typing import Protocol

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.security import generate_password_hash

from gateway.auth import (
    ANONYMOUS,
    Authenticator,
    AuthError,
    LoginThrottle,
    Principal,
    TooManyFailures,
    token_sha256,
)
from gateway.config import AuthConfig, BasicUser, OidcConfig, StaticToken


class Signer(Protocol):
    """Signs a JWT with the test key: the usual claims, overridden by the given ones."""

    def __call__(self, **claims: object) -> str: ...


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_none_ignores_any_header() -> None:
    auth = Authenticator(AuthConfig())
    assert auth.authenticate(None) is ANONYMOUS
    assert auth.authenticate("Basic None:None") is ANONYMOUS  # what Snakemake sends


@pytest.fixture
def basic_auth() -> Authenticator:
    return Authenticator(
        AuthConfig(
            mode="basic",
            users=[
                BasicUser(name="alice", password_hash=generate_password_hash("pw-a")),
                BasicUser(name="root", password_hash=generate_password_hash("pw-r"), admin=True),
            ],
        )
    )


def test_basic(basic_auth: Authenticator) -> None:
    assert basic_auth.authenticate(basic("alice", "pw-a")) == Principal("alice", False)
    assert basic_auth.authenticate(basic("root", "pw-r")) == Principal("root", True)
    assert basic_auth.authenticate(basic("alice", "pw-a")).owner_filter == "alice"
    assert basic_auth.authenticate(basic("root", "pw-r")).owner_filter is None


@pytest.mark.parametrize(
    "header", [None, "", "Basic !!!", "Bearer x", basic("alice", "bad"), basic("bob", "pw-a")]
)
def test_basic_refusals(basic_auth: Authenticator, header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        basic_auth.authenticate(header)
    assert info.value.challenge == 'Basic realm="tescape"'


def test_static_bearer_tokens() -> None:
    auth = Authenticator(
        AuthConfig(
            mode="bearer", tokens=[StaticToken(token_sha256=token_sha256("s3cret"), user="ci")]
        )
    )
    assert auth.authenticate("Bearer s3cret") == Principal("ci", False)
    with pytest.raises(AuthError):
        auth.authenticate("Bearer wrong")


@pytest.fixture
def oidc(tmp_path: Path) -> tuple[Authenticator, Signer]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    auth = Authenticator(
        AuthConfig(
            mode="bearer",
            oidc=OidcConfig(issuer="https://idp.test", audience="tescape", jwks_file=str(jwks)),
        )
    )

    def sign(**claims: object) -> str:
        base: dict[str, object] = {
            "iss": "https://idp.test",
            "aud": "tescape",
            "sub": "alice",
            "exp": time.time() + 60,
        }
        base.update(claims)
        return "Bearer " + jwt.encode(base, key, algorithm="RS256", headers={"kid": "k1"})

    return auth, sign


def test_oidc_jwt(oidc: tuple[Authenticator, Signer]) -> None:
    auth, sign = oidc
    assert auth.authenticate(sign()) == Principal("alice", False)
    assert auth.authenticate(sign(groups=["tescape-admin"])) == Principal("alice", True)


@pytest.mark.parametrize(
    "claims",
    [{"exp": 1}, {"iss": "https://evil"}, {"aud": "other"}, {"sub": None}],
)
def test_oidc_refusals(oidc: tuple[Authenticator, Signer], claims: dict[str, object]) -> None:
    auth, sign = oidc
    with pytest.raises(AuthError):
        auth.authenticate(sign(**claims))


def test_oidc_refuses_a_foreign_key(oidc: tuple[Authenticator, Signer]) -> None:
    auth, _ = oidc
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        {"iss": "https://idp.test", "aud": "tescape", "sub": "x", "exp": time.time() + 60},
        other,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(AuthError):
        auth.authenticate("Bearer " + token)


# -- guessing is slowed down ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttled_auth(
    clock: Clock, max_failed_logins: int, failed_login_window_seconds: float = 60.0
) -> Authenticator:
    users = [BasicUser(name="alice", password_hash=generate_password_hash("pw-a"))]
    config = AuthConfig(
        mode="basic",
        users=users,
        max_failed_logins=max_failed_logins,
        failed_login_window_seconds=failed_login_window_seconds,
    )
    return Authenticator(config, clock=clock)


def test_failed_logins_are_limited_per_user_and_address() -> None:
    clock = Clock()
    auth = throttled_auth(clock, max_failed_logins=3, failed_login_window_seconds=60)
    for _ in range(3):
        with pytest.raises(AuthError):
            auth.authenticate(basic("alice", "guess"), client="10.0.0.1")
        clock.now += 1
    # the fourth try is refused before the password is looked at, even the right one
    with pytest.raises(TooManyFailures) as info:
        auth.authenticate(basic("alice", "pw-a"), client="10.0.0.1")
    assert info.value.retry_after == 57  # until the first failure leaves the window
    # another address, or another name from the same address, is counted apart
    assert auth.authenticate(basic("alice", "pw-a"), client="10.0.0.2").user == "alice"
    with pytest.raises(AuthError):
        auth.authenticate(basic("bob", "x"), client="10.0.0.1")
    clock.now += 57
    assert auth.authenticate(basic("alice", "pw-a"), client="10.0.0.1").user == "alice"


def test_a_success_clears_the_count() -> None:
    clock = Clock()
    auth = throttled_auth(clock, max_failed_logins=2)
    with pytest.raises(AuthError):
        auth.authenticate(basic("alice", "guess"), client="a")
    auth.authenticate(basic("alice", "pw-a"), client="a")
    with pytest.raises(AuthError):
        auth.authenticate(basic("alice", "guess"), client="a")
    assert auth.authenticate(basic("alice", "pw-a"), client="a").user == "alice"


def test_unknown_bearer_tokens_are_limited_per_address() -> None:
    clock = Clock()
    auth = Authenticator(
        AuthConfig(
            mode="bearer",
            tokens=[StaticToken(token_sha256=token_sha256("s3cret"), user="ci")],
            max_failed_logins=2,
        ),
        clock=clock,
    )
    for _ in range(2):
        with pytest.raises(AuthError):
            auth.authenticate("Bearer nope", client="h")
    with pytest.raises(TooManyFailures):
        auth.authenticate("Bearer s3cret", client="h")
    assert auth.authenticate("Bearer s3cret", client="other") == Principal("ci", False)


def test_the_throttle_forgets_the_oldest_pairs_beyond_its_bound() -> None:
    clock = Clock()
    throttle = LoginThrottle(1, 60, clock=clock, max_keys=3)
    for name in "abcd":
        throttle.failed((name, "x"))
    throttle.check(("a", "x"))  # forgotten: no longer refused
    with pytest.raises(TooManyFailures):
        throttle.check(("d", "x"))


def test_an_unknown_user_costs_a_password_hash_too(basic_auth: Authenticator) -> None:
    """Timing must not tell which names exist: an unknown name is checked against a dummy hash
    made like the users' (without it, the refusal takes microseconds instead of milliseconds)."""
    assert basic_auth.dummy_hash.split("$")[0] == generate_password_hash("x").split("$")[0]

    def seconds(name: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            with pytest.raises(AuthError):
                basic_auth.authenticate(basic(name, "guess"), client=f"t-{name}-{_}")
            best = min(best, time.perf_counter() - start)
        return best

    assert seconds("nobody") > 0.25 * seconds("alice")
