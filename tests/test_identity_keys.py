"""Customer tokens signed with the shop's asymmetric keys (a JWKS of RS256 and ES256 keys),
key rotation by kid, and the algorithms an attacker might swap in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flashsale.gateway.identity import CustomerTokens, Unauthenticated, load_jwks, parse_secrets

AUD = "flashsale"


def _claims(sub: str = "alice", **extra: Any) -> dict[str, Any]:
    return {"sub": sub, "aud": AUD, "exp": int(time.time()) + 600, **extra}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    """A JWKS file with one RSA and one EC public key, and their private halves."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())),
             "kid": "r1", "alg": "RS256", "use": "sig"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())),
             "kid": "e1", "use": "sig"},
        ]
    }  # fmt: skip
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    return path, rsa_key, ec_key


def test_rs256_and_es256_tokens_of_the_jwks_are_accepted(
    keys: tuple[Path, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey],
) -> None:
    path, rsa_key, ec_key = keys
    tokens = CustomerTokens({}, load_jwks(str(path)), AUD)
    assert tokens.algorithms == {"RS256", "ES256"}
    rs = jwt.encode(_claims("alice"), rsa_key, "RS256", headers={"kid": "r1"})
    es = jwt.encode(_claims("bob"), ec_key, "ES256", headers={"kid": "e1"})
    assert tokens.customer(rs) == "alice"
    assert tokens.customer(es) == "bob"


def test_only_the_configured_algorithms_and_keys_verify(
    keys: tuple[Path, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey],
) -> None:
    path, rsa_key, _ = keys
    tokens = CustomerTokens({}, load_jwks(str(path)), AUD)
    # The algorithm-confusion attack: HS256 "signed" with the RSA public key, which is public.
    pem = rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(Unauthenticated, match="signed with ES256, RS256, not HS256"):
        tokens.customer(_hand_made({"alg": "HS256", "kid": "r1"}, _claims(), pem))
    with pytest.raises(Unauthenticated, match="not none"):
        tokens.customer(_hand_made({"alg": "none"}, _claims(), None))
    other_kid = jwt.encode(_claims(), rsa_key, "RS256", headers={"kid": "e1"})
    with pytest.raises(Unauthenticated, match="no RS256 customer key with kid 'e1'"):
        tokens.customer(other_kid)
    forged = jwt.encode(
        _claims(), rsa.generate_private_key(65537, 2048), "RS256", headers={"kid": "r1"}
    )
    with pytest.raises(Unauthenticated, match="does not verify"):
        tokens.customer(forged)


def _hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT put together by hand, as an attacker would (PyJWT refuses to sign these)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signed = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.digest(key, signed.encode(), hashlib.sha256) if key else b""
    return f"{signed}.{b64(mac)}"


def test_hs256_keys_rotate_by_kid() -> None:
    old, new = "o" * 40, "n" * 40
    tokens = CustomerTokens(parse_secrets(f"k1:{old},k2:{new}"), {}, AUD)
    for kid, key in (("k1", old), ("k2", new)):
        assert tokens.customer(jwt.encode(_claims(kid), key, "HS256", headers={"kid": kid})) == kid
    with pytest.raises(Unauthenticated, match="no customer key with kid None"):
        tokens.customer(jwt.encode(_claims(), new, "HS256"))  # a kid is required then
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        tokens.customer(jwt.encode(_claims(), old, "HS256", headers={"kid": "k2"}))
    with pytest.raises(ValueError, match="kid:secret"):
        parse_secrets(f"k1:{old},{new}")


def test_a_verified_token_is_kept_until_it_expires() -> None:
    now = [1_000_000.0]
    tokens = CustomerTokens({None: b"s" * 40}, {}, AUD, clock=lambda: now[0])
    token = jwt.encode({"sub": "alice", "aud": AUD, "exp": 1_000_100}, b"s" * 40, "HS256")
    assert tokens.customer(token) == "alice"
    assert list(tokens._known) == [token]  # verified once, kept
    now[0] = 1_000_100 + 59  # within the 60 s of leeway: still good
    assert tokens.customer(token) == "alice"
    now[0] = 1_000_100 + 61
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.customer(token)


def test_a_token_has_one_spelling_so_copies_cannot_flood_the_memo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lenient base64 decoder would accept one valid token written a million ways (extra
    characters, different trailing bits), each a new entry of the verified-token memo."""
    key = b"s" * 40
    tokens = CustomerTokens({None: key}, {}, AUD)
    token = jwt.encode(_claims(), key, "HS256")
    head, body, sig = token.split(".")
    assert tokens.customer(token) == "alice"
    last = sig[-1]
    twin = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = twin[twin.index(last) ^ 1]  # same 6-bit group but the last bit: same bytes?
    copies = [
        f"{head}.{body}.{sig[:5]}!!!~{sig[5:]}",
        f"{head}.{body}.{sig}{'*' * 4000}",
        f"{head}.{body}.{sig}==",
        f"{head}.{body}.{sig[:-1]}{sibling}",
        f"{head}=.{body}.{sig}",
    ]
    for copy in copies:
        with pytest.raises(Unauthenticated):
            tokens.customer(copy)
    assert len(tokens._known) == 1
    with pytest.raises(Unauthenticated, match="longer than 4096"):
        tokens.customer(token + "A" * 5000)
    monkeypatch.setattr("flashsale.gateway.identity.MAX_REMEMBERED", 3)
    for customer in ("b", "c", "d"):
        tokens.customer(jwt.encode(_claims(customer), key, "HS256"))
    assert len(tokens._known) == 3 and token not in tokens._known  # the oldest made room


def test_a_malformed_header_is_a_401_not_a_crash() -> None:
    tokens = CustomerTokens({None: b"s" * 40}, {}, AUD)
    for header in ({"alg": ["HS256"]}, {"alg": {"x": 1}}, {"alg": "HS256", "kid": 7}):
        with pytest.raises(Unauthenticated):
            tokens.customer(_hand_made(header, _claims(), b"s" * 40))


def test_a_jwks_comes_from_a_file_or_https_outside_dev() -> None:
    with pytest.raises(ValueError, match="https://"):
        load_jwks("http://127.0.0.1:9/jwks.json")
