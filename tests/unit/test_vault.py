"""Vault references: Kong 3.9.1's syntax and env-vault rules, one resolver for every user."""
from __future__ import annotations

import copy

import orjson
import pytest

from aigw import schema, vault
from aigw.validate import _resolved, validate_doc
from aigw_dev.standin import config as standin_config


def test_kong_doc_example_parses():
    # the example of kong/pdk/vault.lua 3.9.1 (parse_reference's doc comment, 96-121)
    ref = vault.parse_reference("{vault://env/cert/key?prefix=SSL_#1}")
    assert ref == vault.Reference("env", "cert", "key", {"prefix": "SSL_"}, 1)
    assert vault.parse_reference("{vault://env/my-secret}") == vault.Reference("env", "my-secret")
    assert vault.parse_reference("{vault://env/a/b/}").key is None  # a directory: no key


@pytest.mark.parametrize("text", ["vault://env/x", "{vault://env/x", "{vault:/env/x}", 42, None])
def test_not_a_reference(text):
    assert not vault.is_reference(text)


@pytest.mark.parametrize("text", ["{vault://env}", "{vault://env/}", "{vault://env/x#v2}", "{vault:///x}"])
def test_malformed_reference(text):
    with pytest.raises(vault.VaultError):
        vault.parse_reference(text)


def test_env_vault_rules():
    env = {"MY_SECRET": "s1", "MY_SECRET_PREVIOUS": "s0", "SSL_CERT": orjson.dumps({"key": "k1"}).decode(),
           "NUM": '{"n": 5}'}
    assert vault.resolve("{vault://env/my-secret}", env) == "s1"      # upper-case, - -> _
    assert vault.resolve("{vault://env/my-secret#2}", env) == "s0"    # version 2: _PREVIOUS
    assert vault.resolve("{vault://env/cert/key?prefix=ssl-}", env) == "k1"  # prefix, JSON key
    for bad in ("{vault://env/unset}", "{vault://env/num/m}", "{vault://env/num/n}",
                "{vault://env/my-secret/key}", "{vault://aws/x}"):
        with pytest.raises(vault.VaultError) as e:
            vault.resolve(bad, env)
        assert "s1" not in str(e.value) and "k1" not in str(e.value)


def _router_cfg() -> dict:
    return {"providers": [{"name": "o", "type": "openai", "base_url": "{vault://env/test-vault-url}",
                           "api_key": "{vault://env/test-vault-key}",
                           "api_version": "{vault://env/test-vault-key}"}],  # not referenceable
            "models": [{"name": "m", "targets": [{"provider": "o", "model": "x"}]}]}


def test_aigw_validate_and_the_standin_resolve_the_same_fields(monkeypatch):
    env = {"TEST_VAULT_URL": "https://u.example/v1", "TEST_VAULT_KEY": "sk-vault"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    by_validate = _resolved("ai-router", _router_cfg())
    by_standin = copy.deepcopy(_router_cfg())
    standin_config._resolve_refs(by_standin, schema.kong_fields("ai-router"), env, "test")
    assert by_validate == by_standin
    p = by_validate["providers"][0]
    assert (p["base_url"], p["api_key"]) == ("https://u.example/v1", "sk-vault")
    assert p["api_version"] == "{vault://env/test-vault-key}"  # Kong leaves it as written
    assert p["$refs"] == {"base_url": "{vault://env/test-vault-url}", "api_key": "{vault://env/test-vault-key}"}


def test_aigw_validate_resolves_before_the_schema(monkeypatch):
    """A referenced base_url is checked as Kong hands it over (resolved), not as written;
    an unset variable is a placeholder of the right shape."""
    monkeypatch.delenv("TEST_VAULT_URL", raising=False)
    cfg = _router_cfg()
    del cfg["providers"][0]["api_version"]
    doc = {"_format_version": "3.0", "services": [{"name": "s", "plugins": [{"name": "ai-router", "config": cfg}]}]}
    assert validate_doc(doc) == []
    monkeypatch.setenv("TEST_VAULT_URL", "ftp://not-http")
    assert validate_doc(doc) == [("plugin service 's': ai-router: config.providers[0].base_url: "
                                  "violates pattern=^https?://")]
