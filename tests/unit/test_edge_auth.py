"""JWT verification and device identities of the edge (PROTOCOL.md 2.4, 2.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.edge.auth import (
    AuthError,
    DeviceRegistry,
    TokenVerifier,
    device_key_from_secret,
    unverified_principal,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def token(claims: dict[str, object], key: object = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)  # type: ignore[arg-type]


def hs256_signed_with(key: bytes, claims: dict[str, object]) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def exp(delta: float = 3600) -> int:
    return int(time.time() + delta)


def test_hs256_token_with_sub_and_exp_gives_the_principal_and_roles() -> None:
    p = TokenVerifier(SECRET).verify(token({"sub": "alice", "exp": exp(), "roles": ["admin", 3]}))
    assert p.user_id == "alice" and p.roles == ("admin",)
    assert p.as_context()["userId"] == "alice"


@pytest.mark.parametrize(
    "claims",
    [{"exp": exp()}, {"sub": 42, "exp": exp()}, {"sub": "bob"}, {"sub": "bob", "exp": exp(-120)}],
    ids=["no-sub", "sub-not-string", "no-exp", "expired-beyond-leeway"],
)
def test_tokens_missing_required_claims_or_expired_are_rejected(claims: dict[str, object]) -> None:
    with pytest.raises(AuthError):
        TokenVerifier(SECRET).verify(token(claims))


def test_expiry_within_the_60s_leeway_is_accepted() -> None:
    assert TokenVerifier(SECRET).verify(token({"sub": "c", "exp": exp(-30)})).user_id == "c"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        None,
        12,
        "a.b.c",
        token({"sub": "x", "exp": exp()}, "another-secret-long-enough-for-hs256-xx"),
    ],
)
def test_garbage_and_wrongly_signed_tokens_are_rejected(bad: object) -> None:
    with pytest.raises(AuthError):
        TokenVerifier(SECRET).verify(bad)


def test_a_pem_secret_means_rs256_and_refuses_hs256_tokens() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = TokenVerifier(public_pem.replace("\n", "\\n"))  # env vars carry literal \n
    good = token({"sub": "rsa-user", "exp": exp()}, key, "RS256")
    assert verifier.verify(good).user_id == "rsa-user"
    with pytest.raises(AuthError):  # the classic algorithm-confusion forgery
        verifier.verify(hs256_signed_with(public_pem.encode(), {"sub": "forged", "exp": exp()}))


def test_issuer_and_audience_are_checked_when_configured() -> None:
    v = TokenVerifier(SECRET, issuer="topgun", audience="grid")
    ok = {"sub": "a", "exp": exp(), "iss": "topgun", "aud": "grid"}
    assert v.verify(token(ok)).user_id == "a"
    with pytest.raises(AuthError):
        v.verify(token({**ok, "iss": "someone-else"}))
    with pytest.raises(AuthError):
        v.verify(token({**ok, "aud": "other"}))


def test_no_auth_mode_reads_sub_without_verifying_and_tolerates_garbage() -> None:
    assert (
        unverified_principal(token({"sub": "dev"}, "any-secret-long-enough-for-hs256-xxxx")).user_id
        == "dev"
    )
    assert unverified_principal("garbage").user_id is None
    assert unverified_principal(None).user_id is None


def test_device_identity_is_minted_once_then_recognised_by_any_edge_sharing_the_secret() -> None:
    edge_a = DeviceRegistry(device_key_from_secret(SECRET))
    edge_b = DeviceRegistry(device_key_from_secret(SECRET))
    minted = edge_a.present_or_mint(None)
    assert minted.device_token is not None and minted.device_id.startswith("dev-")
    again = edge_b.present_or_mint(minted.device_token)
    assert again == type(again)(minted.device_id, None)
    forged = edge_b.present_or_mint(minted.device_token[:-2] + "xx")
    assert forged.device_id != minted.device_id and forged.device_token is not None
    stranger = DeviceRegistry(device_key_from_secret("another-secret"))
    assert stranger.present_or_mint(minted.device_token).device_id != minted.device_id
