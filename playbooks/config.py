"""config.yaml -> a validated, frozen Config. Every error names the file and the key."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

import yaml

from actions.collect_context import InvestigationSettings
from actions.scan_layer import Limits
from playbooks.classify import DEFAULT_RESPONSES, Allowlists, GrantKind, Response, Severity

DEFAULT_PRIORITIES = {
    Severity.CRITICAL: "Highest",
    Severity.HIGH: "High",
    Severity.LOW: "Low",
    Severity.INFO: "Lowest",
}


class ConfigError(ValueError):
    def __init__(self, source: str, key: str, problem: str):
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True)
class AwsConfig:
    regions: tuple[str, ...] = ()
    assume_role: str = ""
    external_id: str = ""
    accounts: tuple[str, ...] = ()  # other accounts to search for consumers
    organization_accounts: bool = False  # accounts: organization


@dataclass(frozen=True)
class JiraConfig:
    url: str
    project: str
    issue_type: str = "Task"
    done_transition: str = "Done"
    priorities: Mapping[Severity, str] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class SlackConfig:
    channel: str
    api_url: str = "https://slack.com/api/"
    approvers: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    team_id: str = ""
    app_id: str = ""
    timeout_seconds: float = 10.0


class OnTimeout(str, Enum):
    REVOKE = "revoke"
    KEEP = "keep"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class ApprovalConfig:
    timeout_seconds: float = 24 * 3600.0
    remind_after_seconds: float = 0.0  # 0: no reminder
    on_timeout: OnTimeout = OnTimeout.ESCALATE
    keep_exception_seconds: float = 0.0  # 0: keeping a grant writes no exception


@dataclass(frozen=True)
class ServiceConfig:
    max_body_bytes: int = 5 * 1024 * 1024
    check_interval_seconds: float = 60.0
    workers: int = 4


@dataclass(frozen=True)
class Config:
    source: str
    aws: AwsConfig
    allowlists: Allowlists
    responses: Mapping[GrantKind, Response]
    jira: JiraConfig
    slack: SlackConfig
    state_path: Path
    state_table: str = ""  # a DynamoDB table instead of the SQLite file
    state_region: str = ""
    approval: ApprovalConfig = field(default_factory=ApprovalConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    investigation: InvestigationSettings = field(default_factory=InvestigationSettings)
    contain_all_versions: bool = False


@dataclass(frozen=True)
class Secrets:
    """Credentials from the environment only. repr never shows them."""

    jira_email: str = field(default="", repr=False)
    jira_api_token: str = field(default="", repr=False)
    slack_bot_token: str = field(default="", repr=False)
    slack_signing_secret: str = field(default="", repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "Secrets":
        return cls(
            jira_email=environ.get("JIRA_EMAIL", ""),
            jira_api_token=environ.get("JIRA_API_TOKEN", ""),
            slack_bot_token=environ.get("SLACK_BOT_TOKEN", ""),
            slack_signing_secret=environ.get("SLACK_SIGNING_SECRET", ""),
        )


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")
_SECTIONS = {"aws", "policy", "jira", "slack", "state", "approval", "service", "investigation"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``24h``, ``7d`` -> seconds; raises ValueError otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30s, 15m, 24h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def load_config(path: str | Path) -> Config:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "no such file") from None
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot be read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(source, "(file)", f"not valid YAML{where}") from None
    return parse_config(raw or {}, source, base_dir=path.parent)


def parse_config(raw: Any, source: str = "config", base_dir: Path = Path(".")) -> Config:
    r = _Reader(source)
    root = r.mapping(raw, "(top level)")
    r.no_unknown_keys(root, "", _SECTIONS)
    aws = r.mapping(root.get("aws", {}), "aws")
    policy = r.mapping(root.get("policy", {}), "policy")
    jira = r.mapping(root.get("jira"), "jira", required=True)
    slack = r.mapping(root.get("slack"), "slack", required=True)
    state = r.mapping(root.get("state", {}), "state")
    approval = r.mapping(root.get("approval", {}), "approval")
    service = r.mapping(root.get("service", {}), "service")
    investigation = r.mapping(root.get("investigation", {}), "investigation")
    r.no_unknown_keys(aws, "aws", {"regions", "assume_role", "external_id", "accounts"})
    r.no_unknown_keys(policy, "policy", {"own_organization_id", "trusted_accounts", "trusted_organizations",
                                          "trusted_layers", "response", "contain_all_versions"})
    r.no_unknown_keys(investigation, "investigation", {
        "inventory_ttl", "max_concurrent_accounts", "activity_before", "activity_after", "lookup_activity",
        "scan_secrets", "max_layer_bytes", "max_uncompressed_bytes", "max_files"})
    organization_accounts = aws.get("accounts") == "organization"
    if organization_accounts:
        aws = {k: v for k, v in aws.items() if k != "accounts"}
    r.no_unknown_keys(jira, "jira", {"url", "project", "issue_type", "priorities", "timeout_seconds",
                                      "done_transition"})
    r.no_unknown_keys(slack, "slack", {"api_url", "channel", "approvers", "approver_groups", "team_id", "app_id",
                                        "timeout_seconds"})
    r.no_unknown_keys(state, "state", {"path", "dynamodb_table", "dynamodb_region"})
    r.no_unknown_keys(approval, "approval", {"timeout", "remind_after", "on_timeout", "keep_exception_for"})
    r.no_unknown_keys(service, "service", {"max_body_bytes", "check_interval", "workers"})
    on_timeout = r.text(approval, "approval.on_timeout", default="escalate")
    try:
        on_timeout_value = OnTimeout(on_timeout)
    except ValueError:
        raise ConfigError(source, "approval.on_timeout", f"{on_timeout!r} is not one of revoke, keep, escalate") from None

    assume_role = r.text(aws, "aws.assume_role", default="")
    if assume_role and "{account_id}" not in assume_role:
        raise ConfigError(source, "aws.assume_role", "must contain {account_id}, e.g. arn:aws:iam::{account_id}:role/LayerGuardResponder")

    own_org = r.text(policy, "policy.own_organization_id", default="")
    if own_org and not _ORG.match(own_org):
        raise ConfigError(source, "policy.own_organization_id", f"{own_org!r} is not an organization id (o-xxxxxxxxxx)")

    responses = dict(DEFAULT_RESPONSES)
    for kind_name, value in r.mapping(policy.get("response", {}), "policy.response").items():
        key = f"policy.response.{kind_name}"
        try:
            kind = GrantKind(kind_name)
        except ValueError:
            raise ConfigError(source, key, "unknown grant kind; use one of "
                              + ", ".join(k.value for k in DEFAULT_RESPONSES)) from None
        if kind is GrantKind.TRUSTED:
            raise ConfigError(source, key, "trusted grants need no response")
        try:
            responses[kind] = Response(value)
        except ValueError:
            raise ConfigError(source, key, f"{value!r} is not one of revoke, approve, notify") from None

    priorities = dict(DEFAULT_PRIORITIES)
    for severity_name, value in r.mapping(jira.get("priorities", {}), "jira.priorities").items():
        try:
            priorities[Severity(severity_name)] = r.text({"v": value}, f"jira.priorities.{severity_name}", key="v")
        except ValueError:
            raise ConfigError(source, f"jira.priorities.{severity_name}",
                              "unknown severity; use critical, high, low or info") from None

    jira_url = r.text(jira, "jira.url", required=True)
    if not re.match(r"^https?://", jira_url):
        raise ConfigError(source, "jira.url", f"{jira_url!r} is not an http(s) URL")
    slack_api = r.text(slack, "slack.api_url", default="https://slack.com/api/")
    if not re.match(r"^https?://", slack_api):
        raise ConfigError(source, "slack.api_url", f"{slack_api!r} is not an http(s) URL")

    state_path = Path(r.text(state, "state.path", default="layerguard.sqlite"))
    if not state_path.is_absolute():
        state_path = base_dir / state_path
    accounts = tuple(r.pattern_list(aws, "aws.accounts", _ACCOUNT,
                                    "a 12-digit account id (or use accounts: organization)"))
    state_table = r.text(state, "state.dynamodb_table", default="")
    if state_table and "path" in state:
        raise ConfigError(source, "state.dynamodb_table", "set state.path or state.dynamodb_table, not both")
    if state_table and not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", state_table):
        raise ConfigError(source, "state.dynamodb_table", f"{state_table!r} is not a DynamoDB table name")
    state_region = r.text(state, "state.dynamodb_region", default="")
    if state_region and not _REGION.match(state_region):
        raise ConfigError(source, "state.dynamodb_region", f"{state_region!r} is not a region such as eu-west-1")

    return Config(
        source=source,
        aws=AwsConfig(
            regions=tuple(r.pattern_list(aws, "aws.regions", _REGION, "a region such as eu-west-1")),
            assume_role=assume_role,
            external_id=r.text(aws, "aws.external_id", default=""),
            accounts=accounts,
            organization_accounts=organization_accounts,
        ),
        allowlists=Allowlists(
            own_organization_id=own_org,
            trusted_accounts=frozenset(r.pattern_list(policy, "policy.trusted_accounts", _ACCOUNT, "a 12-digit account id")),
            trusted_organizations=frozenset(r.pattern_list(policy, "policy.trusted_organizations", _ORG, "an organization id (o-...)")),
            trusted_layers=tuple(r.pattern_list(policy, "policy.trusted_layers", re.compile(r".+"), "a glob")),
        ),
        responses=responses,
        jira=JiraConfig(
            url=jira_url.rstrip("/"),
            project=r.text(jira, "jira.project", required=True),
            issue_type=r.text(jira, "jira.issue_type", default="Task"),
            priorities=priorities,
            timeout_seconds=r.number(jira, "jira.timeout_seconds", default=10.0),
            done_transition=r.text(jira, "jira.done_transition", default="Done"),
        ),
        slack=SlackConfig(
            channel=r.text(slack, "slack.channel", required=True),
            api_url=slack_api if slack_api.endswith("/") else slack_api + "/",
            approvers=tuple(r.pattern_list(slack, "slack.approvers", re.compile(r"^[UW][A-Z0-9]{2,}$"), "a Slack user id such as U012AB3CD")),
            approver_groups=tuple(r.pattern_list(slack, "slack.approver_groups", re.compile(r"^S[A-Z0-9]{2,}$"), "a Slack user group id such as S0614TZR7")),
            team_id=r.text(slack, "slack.team_id", default=""),
            app_id=r.text(slack, "slack.app_id", default=""),
            timeout_seconds=r.number(slack, "slack.timeout_seconds", default=10.0),
        ),
        state_path=state_path,
        state_table=state_table,
        state_region=state_region,
        approval=ApprovalConfig(
            timeout_seconds=r.duration(approval, "approval.timeout", default="24h"),
            remind_after_seconds=r.duration(approval, "approval.remind_after", default=""),
            on_timeout=on_timeout_value,
            keep_exception_seconds=r.duration(approval, "approval.keep_exception_for", default=""),
        ),
        investigation=_investigation(r, investigation, accounts, organization_accounts),
        contain_all_versions=r.flag(policy, "policy.contain_all_versions", default=False),
        service=ServiceConfig(
            max_body_bytes=int(r.number(service, "service.max_body_bytes", default=5 * 1024 * 1024)),
            check_interval_seconds=r.duration(service, "service.check_interval", default="60s"),
            workers=int(r.number(service, "service.workers", default=4)),
        ),
    )



def _investigation(r: "_Reader", section: dict, accounts: tuple[str, ...],
                   organization_accounts: bool) -> InvestigationSettings:
    """investigation.* over InvestigationSettings, whose defaults are the documented ones."""
    default = InvestigationSettings()

    def seconds(key: str, value: timedelta | float) -> float:
        fallback = value.total_seconds() if isinstance(value, timedelta) else value
        return r.duration(section, f"investigation.{key}", default=f"{fallback:g}s")

    def count(key: str, fallback: int) -> int:
        return int(r.number(section, f"investigation.{key}", default=fallback))

    return InvestigationSettings(
        accounts=accounts, organization_accounts=organization_accounts,
        inventory_ttl_seconds=seconds("inventory_ttl", default.inventory_ttl_seconds),
        max_concurrent_accounts=count("max_concurrent_accounts", default.max_concurrent_accounts),
        activity_before=timedelta(seconds=seconds("activity_before", default.activity_before)),
        activity_after=timedelta(seconds=seconds("activity_after", default.activity_after)),
        lookup_activity=r.flag(section, "investigation.lookup_activity", default=default.lookup_activity),
        scan_secrets=r.flag(section, "investigation.scan_secrets", default=default.scan_secrets),
        max_layer_bytes=count("max_layer_bytes", default.max_layer_bytes),
        limits=Limits(max_uncompressed_bytes=count("max_uncompressed_bytes", default.limits.max_uncompressed_bytes),
                      max_files=count("max_files", default.limits.max_files)))

class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def mapping(self, value: Any, key: str, required: bool = False) -> dict:
        if value is None:
            if required:
                raise self.fail(key, "missing (required section)")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        return value

    def no_unknown_keys(self, mapping: dict, prefix: str, known: set[str]) -> None:
        for name in mapping:
            if name not in known:
                key = f"{prefix}.{name}" if prefix else str(name)
                raise self.fail(key, "unknown key (allowed: " + ", ".join(sorted(known)) + ")")

    def text(self, mapping: dict, dotted: str, default: str | None = None, required: bool = False, key: str | None = None) -> str:
        value = mapping.get(key or dotted.rsplit(".", 1)[-1])
        if value is None or value == "":
            if required:
                raise self.fail(dotted, "missing (required)")
            return default or ""
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise self.fail(dotted, f"must be text, got {type(value).__name__}")
        return str(value).strip()

    def number(self, mapping: dict, dotted: str, default: float) -> float:
        value = mapping.get(dotted.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.fail(dotted, f"must be a positive number, got {value!r}")
        return float(value)

    def flag(self, mapping: dict, dotted: str, default: bool) -> bool:
        value = mapping.get(dotted.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise self.fail(dotted, f"must be true or false, got {value!r}")
        return value

    def duration(self, mapping: dict, dotted: str, default: str) -> float:
        """A duration such as 30s, 15m, 24h or 7d in seconds; empty means 0 (off)."""
        text = self.text(mapping, dotted, default=default)
        if not text:
            return 0.0
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise self.fail(dotted, str(exc)) from None

    def pattern_list(self, mapping: dict, dotted: str, pattern: re.Pattern, what: str) -> list[str]:
        value = mapping.get(dotted.rsplit(".", 1)[-1]) or []
        if not isinstance(value, list):
            raise self.fail(dotted, f"must be a list, got {type(value).__name__}")
        items = []
        for index, item in enumerate(value):
            text = str(item).strip() if isinstance(item, (str, int)) and not isinstance(item, bool) else None
            if not text or not pattern.match(text):
                raise self.fail(f"{dotted}[{index}]", f"{item!r} is not {what}")
            items.append(text)
        return items
