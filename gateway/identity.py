"""Who the customer is: the shop signs it (`X-Customer-Token`, a JWT), the gateway verifies it.

Claims: `sub` (the customer id, same pattern as every id), `exp` (required), `aud` (the
configured audience), optional `iss` (required and checked when an issuer is configured),
`nbf`, and the header's `kid`; 60 s of leeway on the times. Keys: HS256 secrets
(`FLASHSALE_CUSTOMER_SECRET`: one bare secret, or `kid:secret,kid:secret` for rotation) and/or
a JWKS of RS256/ES256 public keys (`FLASHSALE_CUSTOMER_JWKS`, a file or a URL). Only the
algorithms of the configured keys are accepted.

A customer polls and checks out with the same token many times, so each distinct token is
verified once and its customer kept until the token expires (forged tokens are never kept).
HS256 is checked here directly (an HMAC and a few comparisons); PyJWT's decode costs about a
third of a whole checkout.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.settings import Settings, keyed_secrets

LEEWAY_S = 60
MAX_REMEMBERED = 100_000  # verified tokens kept per worker (forged ones never are)
MAX_TOKEN_BYTES = 4096
# Exactly base64url without padding: a lenient decoder would let one valid token be written a
# million ways, each a new entry of the verified-token memo.
PART = re.compile(r"[A-Za-z0-9_-]*")
ASYMMETRIC = ("RS256", "ES256")


class Unauthenticated(Exception):
    """The token is missing or fails a check; `detail` says which (it goes to the client)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def parse_secrets(raw: str) -> dict[str | None, bytes]:
    """`secret` (no kid) or `kid:secret,kid:secret` (FLASHSALE_CUSTOMER_SECRET's form)."""
    found = keyed_secrets(raw, "FLASHSALE_CUSTOMER_SECRET", ":", bare=True)
    return {kid: secret.encode() for kid, secret in found.items()}


def _read_jwks(source: str, *, dev: bool = False) -> dict[str, Any]:
    if source.startswith("http://") and not dev:
        raise ValueError("FLASHSALE_CUSTOMER_JWKS must be a file or an https:// URL")
    if source.startswith(("https://", "http://")):
        with urllib.request.urlopen(source, timeout=5) as reply:
            doc = json.loads(reply.read())
    else:
        with open(source, encoding="utf-8") as f:
            doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"FLASHSALE_CUSTOMER_JWKS {source}: not a JWKS (no 'keys' list)")
    return doc


@dataclass(frozen=True, slots=True)
class PublicKey:
    algorithm: str
    key: Any  # what PyJWT verifies with


def load_jwks(source: str, *, dev: bool = False) -> dict[str, PublicKey]:
    """kid -> key of every RS256/ES256 key in the JWKS (other keys are not ours to accept).
    Read once, at start: a new key of the shop's needs a restart (or a rolling one)."""
    keys: dict[str, PublicKey] = {}
    for jwk in _read_jwks(source, dev=dev)["keys"]:
        algorithm = jwk.get("alg") or {"RSA": "RS256", "EC": "ES256"}.get(jwk.get("kty", ""))
        if algorithm not in ASYMMETRIC or not isinstance(jwk.get("kid"), str):
            continue
        keys[jwk["kid"]] = PublicKey(algorithm, jwt.PyJWK(jwk, algorithm).key)
    if not keys:
        raise ValueError(f"FLASHSALE_CUSTOMER_JWKS {source}: no RS256/ES256 key with a kid")
    return keys


def _b64(part: str) -> bytes:
    """The bytes of one part, which must be canonical base64url: the text re-encodes to itself."""
    if not PART.fullmatch(part):
        raise Unauthenticated("the customer token is not a JWT (bad base64url)")
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated("the customer token is not a JWT (bad base64url)") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != part:
        raise Unauthenticated("the customer token is not a JWT (non-canonical base64url)")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise Unauthenticated(f"the customer token's {what} is not a JSON object")
    return doc


class CustomerTokens:
    """Verifies customer tokens with the configured keys; `customer(token)` is the `sub`."""

    def __init__(
        self,
        secrets: dict[str | None, bytes],
        public_keys: dict[str, PublicKey],
        audience: str,
        issuer: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets and not public_keys:
            raise ValueError("customer tokens need FLASHSALE_CUSTOMER_SECRET or _JWKS")
        self.secrets = secrets
        self.public_keys = public_keys
        self.audience = audience
        self.issuer = issuer
        self.clock = clock
        self.algorithms = {"HS256"} if secrets else set()
        self.algorithms |= {k.algorithm for k in public_keys.values()}
        self._known: dict[str, tuple[str, float]] = {}  # token -> (customer, exp)

    @classmethod
    def from_settings(cls, settings: Settings) -> CustomerTokens:
        secrets = parse_secrets(settings.customer_secret) if settings.customer_secret else {}
        jwks = load_jwks(settings.customer_jwks, dev=settings.dev) if settings.customer_jwks else {}
        return cls(secrets, jwks, settings.customer_audience, settings.customer_issuer)

    def customer(self, token: str) -> str:
        """The verified customer id, or Unauthenticated saying which check failed."""
        now = self.clock()
        known = self._known.get(token)
        if known is not None:
            if now <= known[1] + LEEWAY_S:
                return known[0]
            del self._known[token]
            raise Unauthenticated("the customer token has expired")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"the customer token is longer than {MAX_TOKEN_BYTES} bytes")
        sub, exp = self._verify(token, now)
        if len(self._known) >= MAX_REMEMBERED:
            del self._known[next(iter(self._known))]  # the oldest entry makes room
        self._known[token] = (sub, exp)
        return sub

    def _verify(self, token: str, now: float) -> tuple[str, float]:
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("the customer token is not a JWT (three dot-separated parts)")
        header = _json_object(_b64(parts[0]), "header")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise Unauthenticated(f"customer tokens are signed with {accepted}, not {algorithm}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("the customer token's kid is not a string")
        if algorithm == "HS256":
            claims = self._hs256(parts, kid)
        else:
            claims = self._asymmetric(token, algorithm, kid)
        return self._check_claims(claims, now)

    def _hs256(self, parts: list[str], kid: str | None) -> dict[str, Any]:
        key = self.secrets.get(kid)
        if key is None:
            raise Unauthenticated(f"no customer key with kid {kid!r}")
        signed = f"{parts[0]}.{parts[1]}".encode()
        expected = hmac.digest(key, signed, hashlib.sha256)
        if not hmac.compare_digest(expected, _b64(parts[2])):
            raise Unauthenticated("the customer token's signature does not verify")
        return _json_object(_b64(parts[1]), "payload")

    def _asymmetric(self, token: str, algorithm: str, kid: str | None) -> dict[str, Any]:
        found = self.public_keys.get(kid) if kid is not None else None
        if found is None or found.algorithm != algorithm:
            raise Unauthenticated(f"no {algorithm} customer key with kid {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                found.key,
                algorithms=[algorithm],
                options={
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the customer token does not verify: {exc}") from None
        return claims

    def _check_claims(self, claims: dict[str, Any], now: float) -> tuple[str, float]:
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise Unauthenticated("the customer token has no exp (a number) claim")
        if now > exp + LEEWAY_S:
            raise Unauthenticated("the customer token has expired")
        if nbf is not None and (not isinstance(nbf, int | float) or now < nbf - LEEWAY_S):
            raise Unauthenticated("the customer token is not valid yet (nbf)")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise Unauthenticated(f"the customer token is not for audience {self.audience!r}")
        if self.issuer and claims.get("iss") != self.issuer:
            raise Unauthenticated(f"the customer token is not issued by {self.issuer!r}")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not ID_PATTERN.fullmatch(sub):
            raise Unauthenticated("the customer token's sub is not a customer id")
        return sub, float(exp)
