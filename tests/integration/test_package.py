"""The package as a user installs it: a wheel built from the sdist, installed into a clean venv with the
locked runtime dependencies and no checkout in sight, serves checks against a real Redis."""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ratelimitd
from ratelimitd.store.embedded import EmbeddedRedis
from tests.service import RLS, ServiceProcess

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str:
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(uv).is_file():
        pytest.fail("uv is missing: `make install` puts it in .tools/bin/uv")
    return uv


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)  # nosec B603
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding the wheel and the locked runtime dependencies (not the embedded extra); its bin dir."""
    work = tmp_path_factory.mktemp("package")
    dist = work / "dist"
    # From a copy of the files git would commit: build metadata left in the checkout (ratelimitd.egg-info's
    # file list) must not hide a file the package forgot to declare.
    source = work / "source"
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_symlink() or (ROOT / name).exists():  # links stay links (ratelimitd/lua)
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name, follow_symlinks=False)
    # sdist first, then the wheel from the unpacked sdist: what a user or an index would build.
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source))
    wheels = list(dist.glob("ratelimitd-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("ratelimitd-*.tar.gz")), sorted(p.name for p in dist.iterdir())
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    uv = _uv()
    requirements = work / "requirements.txt"
    requirements.write_text(
        _run(uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-header", cwd=ROOT, env=env)
    )
    venv = work / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, str(venv), env=env)
    python = str(venv / "bin" / "python")
    _run(uv, "pip", "install", "--quiet", "--python", python, "--require-hashes", "-r", str(requirements), env=env)
    _run(uv, "pip", "install", "--quiet", "--python", python, "--no-deps", str(wheels[0]), env=env)
    yield venv / "bin"


def _clean_env(bin_dir: Path) -> dict[str, str]:
    """Only the venv on PATH, nothing pointing back at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RATELIMITD_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = str(bin_dir)
    return env


def test_the_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(
        str(installed / "python"),
        "-c",
        "import ratelimitd, ratelimitd.store.scripts as s; print(ratelimitd.__file__); print(len(s.batch_script()))",
        cwd=tmp_path,
        env=_clean_env(installed),
    ).split()
    assert Path(where[0]).is_relative_to(installed.parent), where
    assert int(where[1]) > 1000  # the Lua sources came from package data
    version = _run(str(installed / "ratelimitd"), "--version", cwd=tmp_path, env=_clean_env(installed))
    assert version.strip() == f"ratelimitd {ratelimitd.__version__}"


def test_the_installed_package_serves_checks(installed: Path, default_redis: EmbeddedRedis, tmp_path: Path) -> None:
    service = ServiceProcess(
        ROOT / "examples" / "config",
        default_redis.url,
        command=(str(installed / "ratelimitd"),),
        cwd=tmp_path,
    )
    service.env = _clean_env(installed)  # ServiceProcess merges os.environ in; the package must not need it
    with service.start():
        login = [("remote_address", "10.9.9.9"), ("path", "/login")]
        codes = [service.check("api", login).overall_code for _ in range(6)]
    assert codes == [RLS.OK] * 5 + [RLS.OVER_LIMIT], service.log_text()


def test_serve_without_a_store_or_the_embedded_extra_says_how_to_get_one(installed: Path, tmp_path: Path) -> None:
    env = _clean_env(installed)
    if shutil.which("redis-server", path=env["PATH"]):  # pragma: no cover - the venv holds none
        pytest.fail("the clean venv unexpectedly has a redis-server")
    done = subprocess.run(  # nosec B603
        [str(installed / "ratelimitd"), "serve", "--config", str(ROOT / "examples" / "config"), "--workers", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "ratelimitd[embedded]" in done.stderr and "--redis-url" in done.stderr, done.stderr
