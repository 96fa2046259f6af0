"""Who a connection is: JWT verification (HS256, or RS256 when the secret is a PEM key) and
device identities (PROTOCOL.md 2.3, 2.4, 2.6).

Tokens must carry ``exp`` and a string ``sub``; ``roles`` is optional. Clock-skew leeway is 60 s.
Device identities are stateless: a device token is a random id signed with the edge's device key,
so every edge that shares the key recognises it, and a token nobody signed is replaced by a fresh
one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import jwt

LEEWAY_S = 60


class AuthError(Exception):
    """A token that does not authenticate anyone; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str | None
    roles: tuple[str, ...] = ()
    claims: dict[str, Any] | None = None

    def as_context(self) -> dict[str, Any]:
        """The ``auth`` object predicates may reference (``valueRef: "auth.<path>"``)."""
        ctx: dict[str, Any] = dict(self.claims or {})
        if self.user_id is not None:
            ctx.setdefault("sub", self.user_id)
            ctx["userId"] = self.user_id
        ctx["roles"] = list(self.roles)
        return ctx


ANONYMOUS = Principal(None)


class TokenVerifier:
    """Verifies client JWTs against one secret or RSA public key."""

    def __init__(self, secret: str, *, issuer: str = "", audience: str = "") -> None:
        normalised = secret.replace("\\n", "\n")
        if normalised.lstrip().startswith("-----BEGIN"):
            self._key: Any = normalised
            self._algorithms = ["RS256"]
        else:
            self._key = normalised.encode("utf-8")
            self._algorithms = ["HS256"]
        self._issuer = issuer or None
        self._audience = audience or None

    def verify(self, token: Any) -> Principal:
        if not isinstance(token, str) or not token:
            raise AuthError("token must be a non-empty string")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                leeway=LEEWAY_S,
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": ["exp"],
                    "verify_aud": self._audience is not None,
                    "verify_sub": False,
                },
            )
        except jwt.PyJWTError as e:
            raise AuthError(str(e)) from None
        except Exception as e:  # a malformed key or token the library did not classify
            raise AuthError(f"token could not be verified: {e}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise AuthError("token has no string 'sub' claim")
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    roles = claims.get("roles")
    role_names = tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
    sub = claims.get("sub")
    return Principal(sub if isinstance(sub, str) else None, role_names, claims)


def unverified_principal(token: Any) -> Principal:
    """In no-auth mode: the token's ``sub`` if it parses at all, else anonymous."""
    if not isinstance(token, str):
        return ANONYMOUS
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:
        return ANONYMOUS
    return principal_from_claims(claims) if isinstance(claims, dict) else ANONYMOUS


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    device_id: str
    device_token: str | None  # set only when freshly minted


class DeviceRegistry:
    """Present-or-mint device identities; stateless, signed with ``key``."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def present_or_mint(self, token: Any) -> DeviceIdentity:
        if isinstance(token, str):
            raw_id, sep, sig = token.partition(".")
            if sep and hmac.compare_digest(sig, self._sign(raw_id)):
                return DeviceIdentity(self._device_id(raw_id), None)
        raw_id = secrets.token_urlsafe(16)
        return DeviceIdentity(self._device_id(raw_id), f"{raw_id}.{self._sign(raw_id)}")

    def _sign(self, raw_id: str) -> str:
        mac = hmac.new(self._key, raw_id.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    @staticmethod
    def _device_id(raw_id: str) -> str:
        return "dev-" + hashlib.sha256(raw_id.encode()).hexdigest()[:16]


def device_key_from_secret(secret: str) -> bytes | None:
    """Edges sharing a JWT secret share device identities; without one each edge has its own."""
    if not secret:
        return None
    return hashlib.sha256(b"topgun-device-identity:" + secret.encode()).digest()
