"""Stream entries of fs:{S}:events decoded into typed events; anything else is a poison entry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.logs import REQUEST_ID
from flashsale.engine.results import Allocation

HOLD_KINDS = ("reserved", "extended", "confirmed", "released", "expired", "compensated")
WITH_EXPIRY = ("reserved", "extended")  # the kinds that carry the hold's expiry

FINGERPRINT = re.compile(r"[0-9a-f]{1,64}")  # engine/api.py's digest of a cart, in hex
Entry = tuple[str, dict[str, str]]  # (stream entry id, fields) as redis-py returns them


class PoisonEntry(ValueError):
    """An entry the reconciler cannot understand; it goes to the dead-letter stream."""


@dataclass(frozen=True, slots=True)
class HoldEvent:
    """reserved / extended / confirmed / released / expired / compensated, as lua/_shared.lua
    `emit` writes them."""

    entry_id: str
    kind: str
    hold_id: str
    customer_id: str
    lines: tuple[Allocation, ...]
    at_ms: int
    payment: str = ""
    reason: str = ""
    request_id: str = ""  # `rid`: the request whose script wrote it ('' = none, or older entries)
    expires_at_ms: int = 0  # reserved, extended: the hold's expiry from then on
    idem_key: str = ""  # reserved: the customer's idempotency key ('' = none)
    fingerprint: str = ""  # reserved: digest of the cart sent with that key


@dataclass(frozen=True, slots=True)
class AdjustEvent:
    """A supplier's stock changed (lua/adjust.lua); `applied` is what Redis really moved."""

    entry_id: str
    sku: str
    supplier_id: str
    delta: int
    applied: int
    shortfall: int
    reason: str
    at_ms: int


Event = HoldEvent | AdjustEvent


def _field(fields: Mapping[str, str], name: str) -> str:
    try:
        return fields[name]
    except KeyError:
        raise PoisonEntry(f"missing field {name!r}") from None


def _int(fields: Mapping[str, str], name: str) -> int:
    raw = _field(fields, name)
    try:
        return int(raw)
    except ValueError:
        raise PoisonEntry(f"field {name!r} is not an integer: {raw[:40]!r}") from None


def _id(fields: Mapping[str, str], name: str) -> str:
    value = _field(fields, name)
    if not ID_PATTERN.fullmatch(value):
        raise PoisonEntry(f"field {name!r} is not an id: {value[:70]!r}")
    return value


def request_id(fields: Mapping[str, str]) -> str:
    """The `rid` field; one that is not a sound request id is dropped, not the event with it."""
    rid = fields.get("rid", "")
    return rid if REQUEST_ID.fullmatch(rid) else ""


def _optional(fields: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
    value = fields.get(name, "")
    if value and not pattern.fullmatch(value):
        raise PoisonEntry(f"field {name!r} is malformed: {value[:70]!r}")
    return value


def parse_lines(raw: str) -> tuple[Allocation, ...]:
    """`sku:supplier:qty,...` with ids, positive quantities, each (sku, supplier) once."""
    out: list[Allocation] = []
    for part in raw.split(","):
        pieces = part.split(":")
        if len(pieces) != 3 or not all(ID_PATTERN.fullmatch(p) for p in pieces[:2]):
            raise PoisonEntry(f"bad line {part[:70]!r}")
        if not pieces[2].isdigit() or int(pieces[2]) < 1:
            raise PoisonEntry(f"bad quantity in line {part[:70]!r}")
        out.append(Allocation(pieces[0], pieces[1], int(pieces[2])))
    if len({(a.sku, a.supplier) for a in out}) != len(out):
        raise PoisonEntry(f"a sku and supplier appear twice in {raw[:70]!r}")
    return tuple(out)


def parse(entry_id: str, fields: Mapping[str, str]) -> Event:
    kind = _field(fields, "type")
    if kind == "adjusted":
        return AdjustEvent(
            entry_id,
            _id(fields, "sku"),
            _id(fields, "supplier"),
            _int(fields, "delta"),
            _int(fields, "applied"),
            _int(fields, "shortfall"),
            fields.get("reason", ""),
            _int(fields, "at_ms"),
        )
    if kind not in HOLD_KINDS:
        raise PoisonEntry(f"unknown event type {kind[:40]!r}")
    return HoldEvent(
        entry_id,
        kind,
        _id(fields, "hold"),
        _id(fields, "user"),
        parse_lines(_field(fields, "lines")),
        _int(fields, "at_ms"),
        fields.get("payment", ""),
        fields.get("reason", ""),
        request_id(fields),
        expires_at_ms=_int(fields, "expires_at_ms") if kind in WITH_EXPIRY else 0,
        idem_key=_optional(fields, "idem", ID_PATTERN),
        fingerprint=_optional(fields, "fp", FINGERPRINT),
    )


@dataclass(frozen=True, slots=True)
class Decoded:
    events: list[Event]
    poison: list[tuple[str, str]]  # (entry id, why)


def decode(entries: list[Entry]) -> Decoded:
    """Keeps stream order; a poison entry is set aside and does not stop the others."""
    events: list[Event] = []
    poison: list[tuple[str, str]] = []
    for entry_id, fields in entries:
        try:
            events.append(parse(entry_id, fields))
        except PoisonEntry as exc:
            poison.append((entry_id, str(exc)))
    return Decoded(events, poison)
