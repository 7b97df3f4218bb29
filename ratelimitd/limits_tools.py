"""`ratelimitd config export | import`: move limits between files and the store (backup, or to and from GitOps).

Both talk to the store directly (`--redis-url`, `--key-prefix` as the service uses them), and import goes
through the same validation, preconditions, history and audit log as the admin API."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import Config, load_or_report
from ratelimitd.engine.stored_limits import LimitsEditor, LimitsError, LimitsSync
from ratelimitd.metrics import Metrics
from ratelimitd.store.connect import connect
from ratelimitd.store.interface import StoredDomain, StoreUnavailable
from ratelimitd.store.limits_store import LimitsStore


def file_name(domain: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", domain) + ".yaml"


async def _read_store(url: str, prefix: str) -> dict[str, StoredDomain]:
    store = connect(url, timeout=2.0)
    try:
        return (await LimitsStore(store, prefix).read_all())[1]
    finally:
        await store.close()


async def _import(url: str, prefix: str, texts: dict[str, str], update: bool, who: str) -> int:
    store = connect(url, timeout=2.0)
    metrics = Metrics()
    try:
        backend = LimitsStore(store, prefix)
        sync = LimitsSync(ConfigHolder(Config()), backend, metrics)
        await sync.refresh()
        editor = LimitsEditor(sync.holder, backend, sync, metrics)
        rc = 0
        for name, text in sorted(texts.items()):
            current = sync.texts.get(name)
            if current == text:
                print(f"{name}: unchanged (version {sync.versions[name]})")
                continue
            if current is not None and not update:
                print(f"{name}: differs from the store's version {sync.versions[name]}; --update replaces it")
                rc = max(rc, 3)
                continue
            precondition = "*" if current is None else str(sync.versions[name])
            try:
                version = await editor.put(name, text, precondition, who, "import")
            except LimitsError as err:
                print(f"{name}: refused: {err}", file=sys.stderr)
                rc = 1
                continue
            print(f"{name}: {'created' if current is None else 'updated'} as version {version}")
        return rc
    finally:
        await store.close()


def export_domains(url: str, prefix: str, out: str) -> int:
    try:
        entries = asyncio.run(_read_store(url, prefix))
    except StoreUnavailable as err:
        print(f"ratelimitd: store unavailable: {err}", file=sys.stderr)
        return 1
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, entry in sorted(entries.items()):
        path = Path(out) / file_name(name)
        path.write_text(entry.yaml, encoding="utf-8")
        print(f"{name}: version {entry.version} -> {path}")
    if not entries:
        print("the store holds no domains")
    return 0


def import_domains(url: str, prefix: str, path: str, update: bool, who: str) -> int:
    """Exit 0 when the store now holds every file's limits, 3 when some differ and --update was not given."""
    config = load_or_report(path)
    if config is None:
        return 1
    texts = {name: Path(d.file).read_text(encoding="utf-8") for name, d in config.domains.items()}
    try:
        return asyncio.run(_import(url, prefix, texts, update, who))
    except StoreUnavailable as err:
        print(f"ratelimitd: store unavailable: {err}", file=sys.stderr)
        return 1
