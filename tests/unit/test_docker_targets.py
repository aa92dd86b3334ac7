"""Where a label-registered probe may point (class 4 of tests/security/README.md): the container itself, or what the
AGENTWATCH_DOCKER_LABEL_PROBE_HOSTS setting allows. Table-driven, on values."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.docker.labels import spec_from_labels
from agentwatch.docker.state import ContainerInfo
from agentwatch.docker.targets import HostAllowList, Refused, Target, resolve_target

OWN = "172.17.0.5"


def box(status: str = "running", *, labels: dict[str, str] | None = None, **fields: Any) -> ContainerInfo:
    fields.setdefault("addresses", (OWN,))
    fields.setdefault("published", (("0.0.0.0", 18080), ("127.0.0.1", 18081), ("10.9.9.9", 18082)))
    return ContainerInfo(id="c".ljust(64, "0"), name="agent-box", status=status, labels=labels or {}, **fields)


@pytest.mark.parametrize(
    ("host", "port", "allowed", "fields", "expected"),
    [
        pytest.param(OWN, 9000, "", {}, (OWN, 9000), id="own-ip-any-port"),
        pytest.param("127.0.0.1", 18080, "", {}, ("127.0.0.1", 18080), id="published-everywhere"),
        pytest.param("localhost", 18081, "", {}, ("localhost", 18081), id="published-on-loopback"),
        pytest.param("127.0.0.1", 18082, "", {}, (OWN, 18082), id="published-elsewhere-is-the-container"),
        pytest.param("127.0.0.1", 4200, "", {}, (OWN, 4200), id="loopback-means-the-container"),
        pytest.param("::1", 4200, "", {}, (OWN, 4200), id="ipv6-loopback-means-the-container"),
        pytest.param("127.0.0.1", 4200, "", {"addresses": ()}, None, id="host-network-refused"),
        pytest.param("172.17.0.1", 4200, "", {}, None, id="gateway-is-the-host-refused"),
        pytest.param("172.17.0.6", 80, "", {}, None, id="another-container-refused"),
        pytest.param("169.254.169.254", 80, "", {}, None, id="metadata-refused"),
        pytest.param("0.0.0.0", 4200, "", {}, None, id="any-address-refused"),
        pytest.param("127.0.0.2", 4200, "", {}, None, id="other-loopback-refused"),
        pytest.param("2130706433", 4200, "", {}, None, id="integer-ip-refused"),
        pytest.param("db.internal", 5432, "", {}, None, id="dns-name-refused"),
        pytest.param("db.internal", 5432, "db.internal", {}, ("db.internal", 5432), id="allowed-name"),
        pytest.param("10.1.2.3", 80, "10.0.0.0/8, 192.168.1.1", {}, ("10.1.2.3", 80), id="allowed-network"),
        pytest.param("192.168.1.1", 80, "10.0.0.0/8, 192.168.1.1", {}, ("192.168.1.1", 80), id="allowed-ip"),
        pytest.param("127.0.0.1", 4200, "127.0.0.1", {}, ("127.0.0.1", 4200), id="allowed-loopback-as-is"),
        pytest.param("anything.example", 1, "*", {}, ("anything.example", 1), id="allowed-any"),
    ],
)
def test_resolve_target(
    host: str, port: int, allowed: str, fields: dict[str, Any], expected: tuple[str, int] | None
) -> None:
    got = resolve_target(box(**fields), host, port, HostAllowList.parse(allowed))
    if expected is None:
        assert isinstance(got, Refused) and "agent-box" in got.reason
    else:
        assert got == Target(*expected)


def test_bad_network_in_the_setting_is_an_error() -> None:
    with pytest.raises(ValueError):
        HostAllowList.parse("10.0.0.0/99")


@pytest.mark.parametrize(
    ("labels", "status", "probe", "refused"),
    [
        pytest.param(
            {"agentwatch.probe.http": "http://localhost:8080/health"},
            "running",
            {"http": {"url": f"http://{OWN}:8080/health"}},
            False,
            id="http-localhost-is-the-container",
        ),
        pytest.param(
            {"agentwatch.probe.http": "http://127.0.0.1:18080/h", "agentwatch.probe.http.expect_status": "204"},
            "running",
            {"http": {"url": "http://127.0.0.1:18080/h", "expect_status": "204"}},
            False,
            id="http-published-port",
        ),
        pytest.param(
            {"agentwatch.probe.tcp": "127.0.0.1:5432"},
            "running",
            {"tcp": {"host": OWN, "port": 5432}},
            False,
            id="tcp-localhost-is-the-container",
        ),
        pytest.param(
            {"agentwatch.probe.http": "http://10.0.0.1/steal"},
            "running",
            {"docker": {"container": "c".ljust(64, "0")}},
            True,
            id="http-elsewhere-refused",
        ),
        pytest.param(
            {"agentwatch.probe.tcp": "172.17.0.1:4200"},
            "running",
            {"docker": {"container": "c".ljust(64, "0")}},
            True,
            id="tcp-elsewhere-refused",
        ),
        pytest.param(
            {"agentwatch.probe.http": "http://10.0.0.1/"},
            "exited",
            {"docker": {"container": "c".ljust(64, "0")}},
            False,
            id="stopped-container-judged-by-its-state",
        ),
    ],
)
def test_probe_labels(labels: dict[str, str], status: str, probe: dict[str, Any], refused: bool) -> None:
    raw, why = spec_from_labels(box(status, labels={"agentwatch.agent": "a", **labels}))
    assert raw["probe"] == probe
    assert (why is not None) is refused
    if refused:
        assert why is not None and "agent-box" in why
