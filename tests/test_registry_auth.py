"""Registry logins against the real registry with htpasswd auth: credentials from the
environment or from a Docker auth file; missing or wrong ones give one line without the
secret."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmi.demo.registry import RegistryServer
from kmi.errors import KmiError
from kmi.registry import Client, client_for
from kmi.registry_ref import Registry
from kmi.settings import load_settings

SECRET = "s3cret-Pa55"
BLOB = b"kmi auth test blob\n"


@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt, as the registry's htpasswd wants

        hashed = crypt.crypt(SECRET, crypt.mksalt(crypt.METHOD_BLOWFISH))
    folder = tmp_path_factory.mktemp("locked")
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(f"pusher:{hashed}\n")
    server = RegistryServer(folder / "registry", htpasswd=htpasswd).start()
    yield server
    server.stop()


def push(client: Client, tmp_path: Path) -> None:
    import hashlib

    blob = tmp_path / "blob"
    blob.write_bytes(BLOB)
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    client.upload("kmi/auth", digest, blob, lambda n: None)
    assert client.has_blob("kmi/auth", digest)


def client(server: RegistryServer, env: dict[str, str]) -> Client:
    """A client as kmi makes one: settings from `env`, auth files found from it too."""
    settings = load_settings({**env, "KMI_HTTP_RETRIES": "0"}, Path("/x"))
    return client_for(settings, Registry.parse(server.host), env)


def test_credentials_from_the_environment(locked_registry: RegistryServer, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KMI_REGISTRY_USER": "pusher", "KMI_REGISTRY_PASSWORD": SECRET}
    push(client(locked_registry, env), tmp_path)


def test_credentials_from_a_docker_auth_file(
    locked_registry: RegistryServer, tmp_path: Path
) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    token = base64.b64encode(f"pusher:{SECRET}".encode()).decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {locked_registry.host: {"auth": token}}})
    )
    push(client(locked_registry, {"HOME": str(tmp_path), "DOCKER_CONFIG": str(config)}), tmp_path)


def test_no_credentials_says_how_to_log_in(locked_registry: RegistryServer, tmp_path: Path) -> None:
    with pytest.raises(KmiError) as err:
        push(client(locked_registry, {"HOME": str(tmp_path)}), tmp_path)
    assert "wants a login; set KMI_REGISTRY_USER and KMI_REGISTRY_PASSWORD" in str(err.value)


def test_a_wrong_password_fails_without_printing_it(
    locked_registry: RegistryServer, tmp_path: Path
) -> None:
    wrong = "not-the-Secret-42"
    env = {"HOME": str(tmp_path), "KMI_REGISTRY_USER": "pusher", "KMI_REGISTRY_PASSWORD": wrong}
    with pytest.raises(KmiError) as err:
        push(client(locked_registry, env), tmp_path)
    message = str(err.value)
    assert "HTTP 401" in message and "\n" not in message
    assert wrong not in message and base64.b64encode(f"pusher:{wrong}".encode()).decode() not in (
        message
    )
