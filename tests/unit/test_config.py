"""The layered config: defaults ← file ← TESCAPE_… env ← flags, strict about unknown keys."""

from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, env_layer, load_config

REPO = Path(__file__).resolve().parents[2]


def test_default_yaml_documents_exactly_the_defaults() -> None:
    assert load_config(REPO / "configs" / "default.yaml", environ={}) == Config()


def test_default_yaml_comments_every_key() -> None:
    """Every key line in configs/default.yaml has a comment above it or in its section."""
    lines = (REPO / "configs" / "default.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_section = not line.startswith(" ") and stripped.endswith(":")
        if not stripped or stripped.startswith("#") or is_section:
            continue
        above = [x.strip() for x in lines[max(0, i - 12) : i]]
        assert any(x.startswith("#") for x in above), f"undocumented key: {line!r}"


def test_layers_in_order(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server: {port: 9000, threads: 3}\nauth: {mode: none}\n")
    cfg = load_config(
        f,
        overrides={"server": {"threads": 5}},
        environ={"TESCAPE_SERVER__PORT": "9100", "TESCAPE_SERVER__HOST": "0.0.0.0"},
    )
    assert (cfg.server.port, cfg.server.threads, cfg.server.host) == (9100, 5, "0.0.0.0")


def test_env_values_are_yaml_scalars_and_client_vars_are_skipped() -> None:
    layer = env_layer(
        {
            "TESCAPE_SERVER__CORS_ORIGINS": "[a, b]",
            "TESCAPE_DATA_DIR": "/srv/t",
            "TESCAPE_SERVER": "http://x",
            "TESCAPE_TOKEN": "secret",
            "HOME": "/root",
        }
    )
    assert layer == {"server": {"cors_origins": ["a", "b"]}, "data_dir": "/srv/t"}


@pytest.mark.parametrize(
    ("content", "environ", "needle"),
    [
        ("servr: {port: 1}\n", {}, "servr: unknown key"),
        ("server: {prot: 1}\n", {}, "server.prot: unknown key"),
        ("", {"TESCAPE_SERVER__PROT": "1"}, "server.prot: unknown key"),
        ("server: {port: abc}\n", {}, "server.port"),
        ("auth: {mode: basic}\n", {}, "auth.users is empty"),
        ("- a\n", {}, "mapping"),
    ],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, content: str, environ: dict, needle: str
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(f, environ=environ)
    assert needle in str(info.value)


def test_state_lives_in_the_working_directory_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.data_path == tmp_path
    assert cfg.database_url == f"sqlite:///{tmp_path / 'tescape.db'}"
