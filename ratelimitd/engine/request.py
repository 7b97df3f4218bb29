"""Transport-free request model and its validation (input limits included)."""

from __future__ import annotations

from dataclasses import dataclass

from ratelimitd.config.units import Unit

MAX_DESCRIPTORS = 64
MAX_ENTRIES = 16
MAX_FIELD_BYTES = 256
MAX_COST = 10**9


class InvalidRequest(ValueError):
    """The caller's request is malformed; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class LimitOverride:
    requests_per_unit: int
    unit: Unit


@dataclass(frozen=True, slots=True)
class Descriptor:
    entries: tuple[tuple[str, str], ...]
    hits_addend: int | None = None  # None: use the request's cost; 0 is a peek
    limit: LimitOverride | None = None


@dataclass(frozen=True, slots=True)
class Request:
    domain: str
    descriptors: tuple[Descriptor, ...]
    hits_addend: int = 0  # 0 means 1, as in Envoy
    dry_run: bool = False

    def cost_of(self, d: Descriptor) -> int:
        if d.hits_addend is not None:
            return d.hits_addend
        return self.hits_addend or 1


def validate(req: Request) -> None:
    if not req.domain:
        raise InvalidRequest("rate limit domain must not be empty")
    if len(req.domain.encode()) > MAX_FIELD_BYTES:
        raise InvalidRequest(f"domain is longer than {MAX_FIELD_BYTES} bytes")
    if not req.descriptors:
        raise InvalidRequest("rate limit descriptor list must not be empty")
    if len(req.descriptors) > MAX_DESCRIPTORS:
        raise InvalidRequest(f"too many descriptors: {len(req.descriptors)} > {MAX_DESCRIPTORS}")
    if req.hits_addend > MAX_COST:
        raise InvalidRequest(f"hits_addend {req.hits_addend} exceeds {MAX_COST}")
    for i, d in enumerate(req.descriptors):
        if not d.entries:
            raise InvalidRequest(f"descriptors[{i}] has no entries")
        if len(d.entries) > MAX_ENTRIES:
            raise InvalidRequest(f"descriptors[{i}] has {len(d.entries)} entries, more than {MAX_ENTRIES}")
        for j, (key, value) in enumerate(d.entries):
            if not key:
                raise InvalidRequest(f"descriptors[{i}].entries[{j}] has an empty key")
            if len(key.encode()) > MAX_FIELD_BYTES or len(value.encode()) > MAX_FIELD_BYTES:
                raise InvalidRequest(
                    f"descriptors[{i}].entries[{j}] key or value is longer than {MAX_FIELD_BYTES} bytes"
                )
        if d.hits_addend is not None and d.hits_addend > MAX_COST:
            raise InvalidRequest(f"descriptors[{i}].hits_addend {d.hits_addend} exceeds {MAX_COST}")
        if d.limit is not None and d.limit.requests_per_unit > 2**32 - 1:
            raise InvalidRequest(f"descriptors[{i}].limit.requests_per_unit is out of range")
