"""Admission tokens (HS256 JWTs bound to a sale and a customer, key ids for rotation) and the
signed ticket ids of the waiting room, both verified without Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import jwt

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.settings import Settings, token_previous_secrets
from flashsale.gateway.problems import Problem

ALGORITHM = "HS256"
ISSUER = "flashsale"
TOKEN_PURPOSE = b"flashsale admission token v1"
TICKET_PURPOSE = b"flashsale ticket v1"
TICKET_MAC_BYTES = 12
MAX_VERIFIED = 500_000
REQUIRED_CLAIMS = ["iss", "aud", "sub", "jti", "iat", "exp"]
BEARER_ERROR = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True, slots=True)
class Claims:
    sale_id: str
    customer_id: str
    place: int
    expires_at_ms: int


def audience(sale_id: str) -> str:
    return f"sale:{sale_id}"


def _derive(secret: str, purpose: bytes) -> bytes:
    """One 32-byte key per purpose, so a ticket MAC can never pass for a token signature."""
    return hmac.digest(secret.encode(), purpose, "sha256")


class KeyRing:
    """The current signing secret under its key id, and previous ones still accepted."""

    def __init__(self, current_kid: str, secrets: dict[str, str]) -> None:
        if current_kid not in secrets or not ID_PATTERN.fullmatch(current_kid):
            raise ValueError("the current key id must be an id with a secret")
        self.current_kid = current_kid
        self.token_keys = {kid: _derive(s, TOKEN_PURPOSE) for kid, s in secrets.items()}
        # Current first: almost every ticket checked was signed with it.
        order = [current_kid, *(k for k in secrets if k != current_kid)]
        self.ticket_keys = [_derive(secrets[kid], TICKET_PURPOSE) for kid in order]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        previous = token_previous_secrets(settings)
        if settings.token_kid in previous:
            raise ValueError("FLASHSALE_TOKEN_KID also appears among the previous secrets")
        return cls(settings.token_kid, {**previous, settings.token_kid: settings.token_secret})


def _refused(code: str, detail: str) -> Problem:
    status = 401 if code in ("TOKEN_INVALID", "TOKEN_EXPIRED") else 403
    return Problem(status, code, detail, BEARER_ERROR if status == 401 else None)


class Tokens:
    """Issues and verifies admission tokens."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def issue(
        self, sale_id: str, customer_id: str, place: int, admitted_at_ms: int, expires_at_ms: int
    ) -> str:
        claims = {
            "iss": ISSUER,
            "aud": audience(sale_id),
            "sub": customer_id,
            "jti": str(place),
            "iat": admitted_at_ms // 1000,
            "exp": expires_at_ms // 1000,
        }
        key = self.ring.token_keys[self.ring.current_kid]
        return jwt.encode(claims, key, ALGORITHM, headers={"kid": self.ring.current_kid})

    def verify(self, authorization: str, sale_id: str, customer_id: str) -> Claims:
        """The claims of a valid token for this sale and customer, or a Problem saying why not."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refused("TOKEN_INVALID", "send Authorization: Bearer <admission token>")
        token = token.strip()
        key = self._key_of(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience(sale_id),
                issuer=ISSUER,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise _refused("TOKEN_EXPIRED", "the admission token has expired") from None
        except jwt.InvalidAudienceError:
            raise _refused("TOKEN_WRONG_SALE", "the admission token is for another sale") from None
        except jwt.InvalidTokenError as exc:
            raise _refused("TOKEN_INVALID", f"the admission token is not valid: {exc}") from None
        return _claims(claims, sale_id, customer_id)

    def _key_of(self, token: str) -> bytes:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _refused("TOKEN_INVALID", "the admission token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise _refused("TOKEN_INVALID", f"admission tokens are signed with {ALGORITHM}")
        kid = header.get("kid")
        key = self.ring.token_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _refused("TOKEN_INVALID", "the admission token's key id is unknown")
        return key


def _claims(claims: dict[str, object], sale_id: str, customer_id: str) -> Claims:
    if claims["sub"] != customer_id:
        raise _refused("TOKEN_WRONG_CUSTOMER", "the admission token is for another customer")
    place, expires = claims["jti"], claims["exp"]
    numeric = isinstance(place, str) and place.isascii() and place.isdigit()
    if not numeric or not isinstance(expires, int):
        raise _refused("TOKEN_INVALID", "the admission token's claims are malformed")
    return Claims(sale_id, customer_id, int(str(place)), expires * 1000)


class Tickets:
    """Ticket ids `<number>-<mac>`: the number is the join order, the MAC makes ids unguessable
    and lets the status route refuse forged ones without asking Redis."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._verified: dict[tuple[str, str], int] = {}  # only ids that passed the MAC

    def make(self, sale_id: str, number: int) -> str:
        return f"{number}-{self._mac(self.ring.ticket_keys[0], sale_id, number)}"

    def known(self, sale_id: str, ticket: str) -> int | None:
        """The number of a ticket id verified before (no MAC), else None."""
        return self._verified.get((sale_id, ticket))

    def parse(self, sale_id: str, ticket: str) -> int | None:
        """The ticket number, or None for an id this deployment did not sign for this sale.
        Verified ids are remembered (waiters poll the same one for minutes); forged ones are not,
        so a flood of them cannot grow the memo."""
        known = self._verified.get((sale_id, ticket))
        if known is not None:
            return known
        number = self._check(sale_id, ticket)
        if number is not None:
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified[(sale_id, ticket)] = number
        return number

    def _check(self, sale_id: str, ticket: str) -> int | None:
        digits, sep, mac = ticket.partition("-")
        numeric = digits.isascii() and digits.isdigit() and not digits.startswith("0")
        if not sep or not numeric or len(digits) > 15:
            return None
        number = int(digits)
        for key in self.ring.ticket_keys:
            if hmac.compare_digest(mac, self._mac(key, sale_id, number)):
                return number
        return None

    @staticmethod
    def _mac(key: bytes, sale_id: str, number: int) -> str:
        digest = hmac.digest(key, f"{sale_id}|{number}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest[:TICKET_MAC_BYTES]).decode()
