"""Limits that operators edit live through the admin API: validated here, kept in the store, applied by every
instance sharing that store within a second.

Propagation is by polling one counter (the store's generation) every `POLL_SECONDS`, not by pub/sub: a
published message is lost while a subscriber reconnects and pub/sub behaves differently on Cluster and
Sentinel, while a GET works the same everywhere and cannot miss a change; at 4 GETs a second per worker it
costs the store nothing measurable. A changed generation makes the instance read every stored domain in one
transaction and swap the merged config in whole, like a file reload: a request sees the old or the new
limits, never a mix, and a stored version that does not parse (written by a newer release, say) keeps the
last valid one in force.

Loss: a store that no longer has the generation, or has an older one than the instance applied (flushed,
restarted without persistence or from an old snapshot), has lost changes. The instance then keeps enforcing
what it applied, says so (log, the `ratelimitd_stored_limits_lost` gauge, `lost` in the domain listing) and
applies nothing from that store until an operator restores it (`restore`), so limits are never dropped
silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import ConfigError, Domain, parse_domain_text
from ratelimitd.config.locate import line_of
from ratelimitd.engine.admin import rule_changes
from ratelimitd.metrics import Metrics
from ratelimitd.store.interface import LimitsBackend, StoredDomain, StoreUnavailable

log = logging.getLogger(__name__)
audit = logging.getLogger("ratelimitd.audit")

POLL_SECONDS = 0.25
MAX_YAML_BYTES = 256 * 1024
_DOMAIN_NAME = re.compile(r"^[^\x00-\x1f\x7f/]{1,256}$")


class LimitsError(Exception):
    """A refused edit; `kind` says which (the faces map it to a status), the message says why."""

    def __init__(self, kind: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # invalid, precondition_required, stale, exists, file_domain, not_found
        self.problems = problems or [message]
        self.located: list[tuple[str, str]] = []  # (config path, problem) where the problem has a path


@dataclass(frozen=True, slots=True)
class DomainText:
    """A domain as the API shows it: its YAML, its version (the ETag) and where it comes from."""

    domain: str
    yaml: str
    etag: str
    source: str


def etag_of(version: int) -> str:
    return f'"{version}"'


def parse_precondition(if_match: str | None, if_none_match: str | None) -> str:
    """'*' (create) or the version an update expects; the ETag may come quoted, weak or bare."""
    if if_none_match is not None and if_none_match.strip() == "*":
        return "*"
    if if_match is None:
        raise LimitsError(
            "precondition_required",
            "a change needs If-Match: <version> (from GET or the history), or If-None-Match: * to create",
        )
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise LimitsError("precondition_required", f"If-Match must be a version number, not {if_match!r}")
    return value


class LimitsSync:
    """Keeps this instance's stored domains equal to the store's (see the module docstring)."""

    def __init__(self, holder: ConfigHolder, backend: LimitsBackend, metrics: Metrics) -> None:
        self.holder = holder
        self.backend = backend
        self.metrics = metrics
        self.applied_generation = 0  # 0: nothing applied yet
        self.versions: dict[str, int] = {}
        self.texts: dict[str, str] = {}
        self.lost = False

    async def refresh(self) -> None:
        generation = await self.backend.generation()
        if generation == self.applied_generation or (generation is None and not self.applied_generation):
            return
        if generation is None or generation < self.applied_generation:
            self._report_loss(generation)
            return
        generation, entries = await self.backend.read_all()
        if generation is None or generation < self.applied_generation:
            self._report_loss(generation)
            return
        self._apply(generation, entries)

    def _apply(self, generation: int, entries: dict[str, StoredDomain]) -> None:
        domains: dict[str, Domain] = {}
        for name, entry in entries.items():
            try:
                domains[name] = parse_domain_text(entry.yaml, f"{name} (stored version {entry.version})")
                self.versions[name], self.texts[name] = entry.version, entry.yaml
            except ConfigError as err:
                log.error("stored domain rejected, its last valid version stays in force: %s", err)
                if name in self.holder.stored:
                    domains[name] = self.holder.stored[name]
        for gone in set(self.versions) - set(domains):
            del self.versions[gone], self.texts[gone]
        self.holder.set_stored(domains)
        if self.lost:
            log.warning("stored limits restored in the store (generation %d); applying it again", generation)
        self.lost = False
        self.metrics.stored_limits_lost.set(0)
        self.applied_generation = generation
        self.metrics.stored_limits_generation.set(generation)
        log.info("stored limits applied (generation %d): %s", generation, ", ".join(sorted(domains)) or "none")

    def _report_loss(self, generation: int | None) -> None:
        if not self.lost:
            log.error(
                "the store has lost stored limits (generation %s, this instance applied %d): still enforcing the "
                "last applied version of %s; restore them with POST /v1/admin/domains/restore",
                generation,
                self.applied_generation,
                ", ".join(sorted(self.versions)) or "no domain",
            )
        self.lost = True
        self.metrics.stored_limits_lost.set(1)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except StoreUnavailable:
                pass  # the store is down: what was applied stays in force; the failure mode handles checks
            except Exception:
                log.exception("stored limits sync failed; the limits in force stay")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)


class LimitsEditor:
    """The admin operations on stored domains, transport-free."""

    def __init__(self, holder: ConfigHolder, backend: LimitsBackend, sync: LimitsSync, metrics: Metrics) -> None:
        self.holder = holder
        self.backend = backend
        self.sync = sync
        self.metrics = metrics

    def listing(self) -> dict[str, Any]:
        domains = []
        for name, d in sorted(self.holder.current.domains.items()):
            source = self.holder.source(name) or "file"
            domains.append(
                {
                    "domain": name,
                    "source": source,
                    "version": self.sync.versions.get(name) if source == "store" else None,
                    "rules": len(d.rules),
                }
            )
        return {"domains": domains, "generation": self.sync.applied_generation, "lost": self.sync.lost}

    async def get(self, domain: str) -> DomainText:
        if self.holder.source(domain) == "file":
            path = Path(self.holder.files.domains[domain].file)
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            return DomainText(domain, text, f'"file-{hashlib.sha256(text.encode()).hexdigest()[:16]}"', "file")
        entry = await self.backend.get(domain)
        if entry is None:
            raise LimitsError("not_found", f"no domain '{domain}'")
        return DomainText(domain, entry.yaml, etag_of(entry.version), "store")

    async def history(self, domain: str) -> list[StoredDomain]:
        self._not_a_file(domain)
        return await self.backend.history(domain)

    async def put(self, domain: str, text: str, precondition: str, who: str, action: str = "") -> int:
        self._check_name(domain)
        self._not_a_file(domain)
        new = self.validate(domain, text)
        old = self.holder.stored.get(domain)
        summary = self._summary(old, new)
        return await self._write(
            domain, precondition, text, who, summary, action or ("create" if precondition == "*" else "update")
        )

    async def delete(self, domain: str, precondition: str, who: str) -> int:
        self._not_a_file(domain)
        if precondition == "*":
            raise LimitsError("precondition_required", "a delete needs If-Match: <version>")
        old = self.holder.stored.get(domain)
        summary = self._summary(old, None)
        return await self._write(domain, precondition, None, who, summary, "delete")

    async def rollback(self, domain: str, to_version: int, precondition: str, who: str) -> int:
        self._not_a_file(domain)
        target = next((e for e in await self.backend.history(domain) if e.version == to_version), None)
        if target is None:
            raise LimitsError("not_found", f"version {to_version} is not in the history of '{domain}'")
        if target.action == "delete":
            raise LimitsError("invalid", f"version {to_version} deleted '{domain}': roll back to a version before it")
        return await self.put(domain, target.yaml, precondition, who, f"rollback to {to_version}")

    async def restore(self, who: str) -> dict[str, Any]:
        """Write back the domains this instance still enforces that the store lost, then move the store's
        generation past every instance's, so all apply the restored set."""
        restored: list[str] = []
        kept: list[str] = []
        for name, text in sorted(self.sync.texts.items()):
            result = await self.backend.write(name, "*", text, who, "restored after the store lost it", "restore")
            (restored if result.outcome == "ok" else kept).append(name)
        generation = await self.backend.raise_generation(self.sync.applied_generation + 1)
        audit.warning("stored limits restored", extra={"who": who, "restored": restored, "generation": generation})
        await self.sync.refresh()
        return {"restored": restored, "already_in_store": kept, "generation": generation}

    def problems(self, domain: str, text: str) -> list[tuple[int | None, str]]:
        """Every problem of `text` as the domain's limits, each with its line (the editor's validation)."""
        try:
            self.validate(domain, text)
        except LimitsError as err:
            if err.located:
                return [(line_of(text, path), message) for path, message in err.located]
            return [(None, p) for p in err.problems]
        return []

    def validate(self, domain: str, text: str) -> Domain:
        if len(text.encode()) > MAX_YAML_BYTES:
            raise LimitsError("invalid", f"{domain}: (root): larger than {MAX_YAML_BYTES} bytes")
        try:
            parsed = parse_domain_text(text, domain)
        except ConfigError as err:
            error = LimitsError("invalid", str(err), [str(p) for p in err.problems])
            error.located = [(p.path, str(p)) for p in err.problems]
            raise error from None
        if parsed.name != domain:
            error = LimitsError(
                "invalid", f"{domain}: domain: must be '{domain}' (the domain in the path), not '{parsed.name}'"
            )
            error.located = [("domain", str(error))]
            raise error
        return parsed

    async def _write(
        self, domain: str, precondition: str, text: str | None, who: str, summary: str, action: str
    ) -> int:
        result = await self.backend.write(domain, precondition, text, who, summary, action)
        if result.outcome == "exists":
            raise LimitsError("exists", f"domain '{domain}' exists (version {result.version}): update it with If-Match")
        if result.outcome == "stale":
            found = f"version {result.version}" if result.version else "no such domain"
            raise LimitsError("stale", f"'{domain}' has changed: the store has {found}, not {precondition}")
        self.metrics.stored_limits_changes.labels(action.split()[0]).inc()
        audit.warning(
            "limits %s: %s version %d by %s: %s",
            action,
            domain,
            result.version,
            who,
            summary,
            extra={"domain": domain, "version": result.version, "who": who, "action": action},
        )
        with contextlib.suppress(StoreUnavailable):
            await self.sync.refresh()  # this instance applies its own write at once
        return result.version

    def _not_a_file(self, domain: str) -> None:
        if self.holder.source(domain) == "file":
            raise LimitsError(
                "file_domain", f"domain '{domain}' comes from the config files: change it there (read-only here)"
            )

    @staticmethod
    def _check_name(domain: str) -> None:
        if not _DOMAIN_NAME.match(domain):
            raise LimitsError("invalid", "a domain name is 1-256 characters, without '/' or control characters")

    @staticmethod
    def _summary(old: Domain | None, new: Domain | None) -> str:
        lines = rule_changes(old.rules if old else (), new.rules if new else ())
        text = "; ".join(lines) or "no change in limits"
        return text if len(text) <= 500 else text[:497] + "..."
