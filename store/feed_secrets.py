"""Feed secrets at rest: sealed with AES-GCM under a key from FLASHSALE_FEED_KEY, bound to their
supplier (a sealed secret copied to another supplier's row does not open)."""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flashsale.engine.errors import FlashsaleError

VERSION = b"\x01"
NONCE_BYTES = 12


class SecretUnreadable(FlashsaleError):
    """A stored secret does not open with this key (another FLASHSALE_FEED_KEY, or tampering)."""


def key_bytes(feed_key: str) -> bytes:
    """The AES-256 key derived from the setting (any length in, 32 bytes out)."""
    return hashlib.sha256(b"flashsale feed secrets\x00" + feed_key.encode()).digest()


def _aad(supplier_id: str) -> bytes:
    return b"flashsale-feed:" + supplier_id.encode()


def seal(key: bytes, supplier_id: str, secret: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, secret.encode(), _aad(supplier_id))


def unseal(key: bytes, supplier_id: str, sealed: bytes) -> str:
    if sealed[:1] != VERSION or len(sealed) < 1 + NONCE_BYTES + 16:
        raise SecretUnreadable(f"the feed secret of {supplier_id} is not in a known format")
    nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, _aad(supplier_id)).decode()
    except (InvalidTag, UnicodeDecodeError):
        raise SecretUnreadable(f"the feed secret of {supplier_id} does not open") from None
