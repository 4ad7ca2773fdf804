"""The agent's client follows a gateway that moved: the URL file names where it is now."""

from __future__ import annotations

from pathlib import Path

from capsule_runtime.client import GatewayClient
from capsule_runtime.protocol.messages import AGENT_API


def test_the_client_takes_the_url_the_file_names(tmp_path: Path) -> None:
    client = GatewayClient("http://127.0.0.1:1111", "i-1", "t")
    url_file = tmp_path / "gateway.url"
    client.follow(url_file)  # no file: nothing changes
    assert client.base == "http://127.0.0.1:1111" + AGENT_API
    url_file.write_text("http://127.0.0.1:2222/\n")
    client.follow(url_file)
    assert client.base == "http://127.0.0.1:2222" + AGENT_API
    url_file.write_text("")
    client.follow(url_file)  # an empty file (being written): nothing changes
    assert client.base == "http://127.0.0.1:2222" + AGENT_API
