"""The pytest plugin: the ``tusk_app`` fixture and the ``--tusk-bus`` option.

It is loaded in every pytest run of an environment where tusk_events is installed, so it
imports the kit only when a test asks for ``tusk_app``.

Registered by the package's ``pytest11`` entry point, so installing tusk_events is enough;
from a source checkout without that install, load it with ``-p tusk_events.testing.plugin``
(:func:`autoloads` says which applies).

``--tusk-bus URL`` (repeatable; or ``TUSK_TEST_BUS=url,url``) runs every test that uses
``tusk_app`` once per bus: ``pytest --tusk-bus memory:// --tusk-bus redis://127.0.0.1:6379/7``.
A Redis database named this way belongs to the tests: it is emptied before and after each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tusk_events.defaults import TESTING_BUS_ENV_VAR

if TYPE_CHECKING:
    from tusk_events.testing.app import Paths, TuskApp

PLUGIN = "tusk_events.testing.plugin"


def autoloads() -> bool:
    """Whether pytest loads this plugin by itself (the installed package has the entry point)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


def plugin_args() -> list[str]:
    """The pytest arguments that load this plugin exactly once (none when it autoloads)."""
    return [] if autoloads() else ["-p", PLUGIN]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tusk_events", "tusk_events testing kit")
    group.addoption(
        "--tusk-bus", action="append", default=[], metavar="URL",
        help=f"run tusk_app tests on this bus (repeat for several; default ${TESTING_BUS_ENV_VAR} or memory://)",
    )


def _buses(config: pytest.Config) -> list[str]:
    urls: list[str] = list(config.getoption("--tusk-bus") or [])
    if not urls:
        urls = [u.strip() for u in os.environ.get(TESTING_BUS_ENV_VAR, "").split(",") if u.strip()]
    return urls or ["memory://"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tusk_bus" in metafunc.fixturenames:
        urls = _buses(metafunc.config)
        if urls == ["memory://"]:
            return  # the default: no parametrisation, test ids stay as they are
        ids = [u.split("://", 1)[0] if [x.split("://")[0] for x in urls].count(u.split("://")[0]) == 1 else u
               for u in urls]
        metafunc.parametrize("tusk_bus", urls, ids=ids, indirect=True, scope="function")


@pytest.fixture
def tusk_bus(request: pytest.FixtureRequest) -> str:
    """The bus URL this run of the test uses (``memory://`` means a private one per app)."""
    url: str = getattr(request, "param", "memory://")
    if not url.startswith("memory://"):
        _require_redis(url)
    return url


def _require_redis(url: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as err:  # noqa: BLE001 - any failure means "not reachable"
        message = f"the bus {url} is not reachable ({err!r})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; under CI=true the tests must run on it")
        pytest.skip(message)


@pytest.fixture
def tusk_app(
    tusk_bus: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., TuskApp]]:
    """A factory: ``app = tusk_app("configs/app.tsk", env={...})`` -> a :class:`TuskApp`, closed after the test.

    Relative paths that do not exist from the working directory are taken from pytest's
    rootdir. Keyword arguments go to :class:`TuskApp` (``bus``, ``store``, ``startup``...).
    """
    # imported here: an autoloaded plugin must not slow down pytest runs that never use it
    from tusk_events.testing.app import TuskApp

    apps: list[TuskApp] = []

    def make(paths: Paths, **options: Any) -> TuskApp:
        if "bus" not in options and not tusk_bus.startswith("memory://"):
            if apps:
                pytest.fail(
                    f"one tusk_app per test on {tusk_bus}: a second would share (and empty) its database; "
                    "give it a bus=... of its own", pytrace=False,
                )
            options["bus"], options["flush"] = tusk_bus, True
        options.setdefault("root", request.config.rootpath)
        options.setdefault("tmp_dir", tmp_path / f"tusk-app-{len(apps)}")
        app = TuskApp(paths, **options)
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.close()
