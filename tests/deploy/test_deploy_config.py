"""The configuration for running past one machine (deploy/) loads and fits together.

- ``deploy/dagster/dagster-k8s.yaml`` passes Dagster's own instance schema
  (``dagster_instance_config``), names the Kubernetes run launcher, limits runs to one per room
  (the ``dagster/partition`` tag) and loads our run coordinator with a config its schema takes;
  with ``dagster-k8s`` installed, the launcher's config passes the launcher's own schema too;
- every pool of ``deploy/dagster/pools.yaml`` is declared (``pool=``) by an op or asset of
  ``pipelines.definitions``, with a positive limit;
- ``deploy/compose.scale.yaml`` parses (with Compose's ``!reset`` / ``!override`` tags) and the
  nginx upstream of ``deploy/nginx/nginx.conf`` lists several of its API services; nginx.conf
  parses into blocks, proxies the room WebSocket with the upgrade headers.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTANCE_YAML = DEPLOY / "dagster" / "dagster-k8s.yaml"
POOLS_YAML = DEPLOY / "dagster" / "pools.yaml"
COMPOSE_SCALE = DEPLOY / "compose.scale.yaml"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
#: The distributed run launcher the instance config must name.
LAUNCHER = ("dagster_k8s", "K8sRunLauncher")
ROOM_SOCKET = "/api/v1/rooms/00000000-0000-0000-0000-000000000000/ws"


# --- Dagster ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instance_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The instance config as Dagster loads and validates it (from a DAGSTER_HOME)."""
    from dagster._core.instance.config import dagster_instance_config

    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))
    # Our instance class (pooled storage connections), loaded by Dagster from the config.
    assert custom_class is not None and custom_class.__name__ == "RoomInstance"
    return dict(config)


def test_the_instance_config_names_the_kubernetes_run_launcher(
    instance_config: dict[str, Any],
) -> None:
    launcher = instance_config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == LAUNCHER
    # The run pods load the same instance from this ConfigMap.
    assert launcher["config"]["instance_config_map"]
    assert instance_config["storage"].keys() == {"postgres"}


def test_runs_are_queued_one_per_room(instance_config: dict[str, Any]) -> None:
    from dagster._config import validate_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.storage.tags import PARTITION_NAME_TAG
    from dagster._serdes import class_from_code_pointer

    coordinator = instance_config["run_coordinator"]
    cls = class_from_code_pointer(coordinator["module"], coordinator["class"])
    assert issubclass(cls, QueuedRunCoordinator)
    checked = validate_config(cls.config_type(), coordinator.get("config") or {})
    assert checked.success, checked.errors

    runs = instance_config["concurrency"]["runs"]
    per_room = [
        limit
        for limit in runs["tag_concurrency_limits"]
        if limit["key"] == PARTITION_NAME_TAG
        and limit.get("value") == {"applyLimitPerUniqueValue": True}
    ]
    assert [limit["limit"] for limit in per_room] == [1]


def test_the_run_launcher_config_passes_the_launchers_own_schema(
    instance_config: dict[str, Any],
) -> None:
    if importlib.util.find_spec(LAUNCHER[0]) is None:
        pytest.skip(f"{LAUNCHER[0]} is not installed: only the instance schema was checked")
    from dagster._config import validate_config
    from dagster._core.launcher import RunLauncher
    from dagster._serdes import ConfigurableClass, class_from_code_pointer

    launcher = instance_config["run_launcher"]
    cls = class_from_code_pointer(launcher["module"], launcher["class"])
    assert issubclass(cls, RunLauncher) and issubclass(cls, ConfigurableClass)
    checked = validate_config(cls.config_type(), launcher["config"])
    assert checked.success, checked.errors


def declared_pools() -> dict[str, list[str]]:
    """Pool name -> the ops (and assets) of ``pipelines.definitions`` that declare it."""
    from pipelines.definitions import defs

    pools: dict[str, list[str]] = {}
    for job in defs.resolve_all_job_defs():
        for op in job.graph.iterate_op_defs():
            if op.pool:
                pools.setdefault(op.pool, [])
                if op.name not in pools[op.pool]:
                    pools[op.pool].append(op.name)
    return pools


def test_every_configured_pool_is_declared_by_the_definitions(
    instance_config: dict[str, Any],
) -> None:
    assert instance_config["concurrency"]["pools"]["granularity"] == "op"
    limits = (yaml.safe_load(POOLS_YAML.read_text()) or {})["pools"]
    assert limits, "deploy/dagster/pools.yaml names no pool"
    assert all(isinstance(v, int) and v > 0 for v in limits.values()), limits
    declared = declared_pools()
    missing = sorted(set(limits) - set(declared))
    assert not missing, (
        f"pools {missing} of {POOLS_YAML.relative_to(ROOT)} are not declared by any op or asset "
        f"of pipelines.definitions (pools declared: {declared or 'none'}); add pool=... to the "
        "assets that call the LLM"
    )


# --- compose and nginx --------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """yaml.safe_load plus the merge tags of Docker Compose (2.24+)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]


@dataclass
class NginxConf:
    directives: list[Directive] = field(default_factory=list)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{};]|[^\s{};]+')


def parse_nginx(text: str) -> list[Directive]:
    """Directives with their arguments and blocks (comments dropped); raises on bad nesting."""
    text = re.sub(r"(^|\s)#[^\n]*", r"\1", text)
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token == ";":
            assert words, "an empty statement"
            stack[-1].append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            assert words, "a block without a directive"
            directive = Directive(words[0], words[1:], [])
            stack[-1].append(directive)
            assert directive.block is not None
            stack.append(directive.block)
            words = []
        elif token == "}":
            assert not words and len(stack) > 1, "unbalanced braces"
            stack.pop()
        else:
            words.append(token.strip("\"'"))
    assert len(stack) == 1 and not words, "unterminated block or statement"
    return stack[0]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.load(COMPOSE_SCALE.read_text(), ComposeLoader)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def http_block() -> Directive:
    top = parse_nginx(NGINX_CONF.read_text())
    blocks = [d for d in top if d.name == "http"]
    assert len(blocks) == 1
    return blocks[0]


def test_the_compose_override_runs_several_apis_behind_nginx(
    compose: dict[str, Any], http_block: Directive
) -> None:
    base = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    services = compose["services"]
    for name, service in services.items():
        extends = service.get("extends")
        if extends:  # paths are relative to the project directory (compose.yaml's)
            assert (ROOT / extends["file"]).exists(), name
            assert extends["service"] in base, name
    lb = services["lb"]
    mounts = [v.split(":") for v in lb["volumes"]]
    conf = [(src, dst) for src, dst, *_ in mounts if dst == "/etc/nginx/nginx.conf"]
    assert conf and (ROOT / conf[0][0]).resolve() == NGINX_CONF
    # What nginx proxies to: API services of the merged project, several of them.
    upstreams = http_block.all("upstream")
    assert len(upstreams) == 1
    servers = [d.args[0] for d in upstreams[0].all("server")]
    assert len(servers) >= 2, servers
    hosts = {s.rsplit(":", 1)[0] for s in servers}
    assert len(hosts) == len(servers)
    for host in hosts:
        assert host in services, host
        service = services[host]
        is_api = host == "api" or service.get("extends", {}).get("service") == "api"
        assert is_api, f"{host} is not an API replica"
        assert service.get("ports") == [], f"{host} publishes a port besides the balancer's"
    # The balancer listens where compose publishes it.
    listens = {d.args[0] for server in http_block.all("server") for d in server.all("listen")}
    published = {p.rsplit(":", 1)[1] for p in lb["ports"]}
    assert published <= listens


def test_nginx_proxies_the_room_websocket_with_the_upgrade_headers(
    http_block: Directive,
) -> None:
    upstream = http_block.all("upstream")[0].args[0]
    maps = [m for m in http_block.all("map") if m.args == ["$http_upgrade", "$connection_upgrade"]]
    assert maps, "no map from $http_upgrade to $connection_upgrade"
    default = [d.args for d in maps[0].block or [] if d.name == "default"]
    assert default == [["upgrade"]]
    # The location nginx picks for the socket: the longest matching prefix.
    locations = [loc for server in http_block.all("server") for loc in server.all("location")]
    matching = [loc for loc in locations if ROOM_SOCKET.startswith(loc.args[-1])]
    assert matching, "no location matches the room WebSocket"
    socket_location = max(matching, key=lambda loc: len(loc.args[-1]))
    settings = {(d.name, *d.args) for d in socket_location.block or []}
    assert ("proxy_pass", f"http://{upstream}") in settings
    assert ("proxy_http_version", "1.1") in settings
    assert ("proxy_set_header", "Upgrade", "$http_upgrade") in settings
    assert ("proxy_set_header", "Connection", "$connection_upgrade") in settings
