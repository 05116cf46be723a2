"""config.yaml validation: every error names the key."""

from pathlib import Path

import pytest

from playbooks.classify import GrantKind, Response, Severity
from playbooks.config import ConfigError, Secrets, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def minimal_raw(**overrides):
    raw = {"jira": {"url": "https://jira.example.com", "project": "SEC"},
           "slack": {"channel": "#security"}}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    return raw


def minimal_config(**overrides):
    return parse_config(minimal_raw(**overrides), "test.yaml")


def test_shipped_config_yaml_is_valid():
    config = load_config(ROOT / "config.yaml")
    assert config.responses[GrantKind.PUBLIC] is Response.REVOKE
    assert config.jira.project


def test_defaults():
    config = minimal_config()
    assert config.slack.api_url == "https://slack.com/api/"
    assert config.responses[GrantKind.CROSS_ACCOUNT] is Response.APPROVE
    assert config.jira.priorities[Severity.CRITICAL] == "Highest"
    assert config.state_path.name == "layerguard.sqlite"


def test_investigation_settings_come_from_config_with_the_actions_defaults():
    from datetime import timedelta

    from actions.collect_context import InvestigationSettings

    assert minimal_config().investigation == InvestigationSettings()
    settings = minimal_config(investigation__inventory_ttl="10m", investigation__activity_before="2h",
                              investigation__max_files=5, aws__accounts=["210987654321"]).investigation
    assert (settings.inventory_ttl_seconds, settings.activity_before, settings.limits.max_files, settings.accounts) == (
        600.0, timedelta(hours=2), 5, ("210987654321",))
    with pytest.raises(ConfigError) as info:
        minimal_config(investigation__max_files="many")
    assert info.value.key == "investigation.max_files"


def test_state_in_dynamodb():
    config = minimal_config(state__dynamodb_table="layerguard-state", state__dynamodb_region="eu-west-1")
    assert (config.state_table, config.state_region) == ("layerguard-state", "eu-west-1")


def test_response_override_and_allowlists():
    config = minimal_config(policy__response={"cross-account": "revoke"},
                            policy__trusted_accounts=["210987654321"],
                            policy__trusted_layers=["public-*"])
    assert config.responses[GrantKind.CROSS_ACCOUNT] is Response.REVOKE
    assert "210987654321" in config.allowlists.trusted_accounts
    assert config.allowlists.trusted_layers == ("public-*",)


@pytest.mark.parametrize("overrides, key, problem", [
    ({"policy__response": {"cross-account": "delete"}}, "policy.response.cross-account", "not one of"),
    ({"policy__response": {"everyone": "revoke"}}, "policy.response.everyone", "unknown grant kind"),
    ({"policy__trusted_accounts": ["12345"]}, "policy.trusted_accounts[0]", "12-digit"),
    ({"policy__trusted_organizations": "o-abc"}, "policy.trusted_organizations", "must be a list"),
    ({"policy__own_organization_id": "org-1"}, "policy.own_organization_id", "not an organization id"),
    ({"aws__regions": ["mars-1"]}, "aws.regions[0]", "region"),
    ({"aws__assume_role": "arn:aws:iam::1:role/x"}, "aws.assume_role", "{account_id}"),
    ({"jira__url": "jira.example.com"}, "jira.url", "not an http(s) URL"),
    ({"jira__project": None}, "jira.project", "missing"),
    ({"jira__timeout_seconds": -1}, "jira.timeout_seconds", "positive number"),
    ({"slack__approvers": ["alice"]}, "slack.approvers[0]", "Slack user id"),
    ({"slack__colour": "red"}, "slack.colour", "unknown key"),
    ({"jira__priorities": {"urgent": "P1"}}, "jira.priorities.urgent", "unknown severity"),
    ({"state__path": "x.sqlite", "state__dynamodb_table": "lg"}, "state.dynamodb_table", "not both"),
    ({"state__dynamodb_table": "my table!"}, "state.dynamodb_table", "not a DynamoDB table name"),
    ({"state__dynamodb_region": "mars"}, "state.dynamodb_region", "not a region"),
])
def test_errors_name_the_key(overrides, key, problem):
    with pytest.raises(ConfigError) as info:
        minimal_config(**overrides)
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(info.value).startswith("test.yaml: " + key)


def test_missing_sections_and_unknown_top_level_keys():
    with pytest.raises(ConfigError, match="slack: missing"):
        parse_config({"jira": {"url": "https://j", "project": "S"}}, "c.yaml")
    with pytest.raises(ConfigError, match="polcy: unknown key"):
        parse_config(dict(minimal_raw(), polcy={}), "c.yaml")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jira: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: \(file\): not valid YAML at line"):
        load_config(bad)


def test_relative_state_path_is_beside_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("jira: {url: 'https://j', project: S}\nslack: {channel: '#s'}\nstate: {path: data/lg.sqlite}\n")
    assert load_config(path).state_path == tmp_path / "data" / "lg.sqlite"


def test_secrets_come_from_the_environment_and_never_show():
    secrets = Secrets.from_environment({"SLACK_BOT_TOKEN": "xoxb-secret-value", "JIRA_API_TOKEN": "jira-secret"})
    assert secrets.slack_bot_token == "xoxb-secret-value"
    assert "secret" not in repr(secrets)
