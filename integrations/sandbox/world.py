"""A small world for the demo and the end-to-end tests: moto's server, the Jira and Slack
emulators, and helpers to build layers, grants and the CloudTrail records AWS would write.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import yaml

from integrations.sandbox.aws_server import FAKE_CREDENTIALS, MotoServer, aws_environment
from integrations.sandbox.jira_emulator import JiraEmulator
from integrations.sandbox.slack_emulator import SlackEmulator

ACCOUNT_ID = "123456789012"  # moto's default account
PARTNER_ACCOUNT_ID = "210987654321"
REGION = "us-east-1"
SANDBOX_SECRETS = {
    "JIRA_EMAIL": "layerguard@example.com",
    "JIRA_API_TOKEN": "sandbox-jira-token",
    "SLACK_BOT_TOKEN": "xoxb-sandbox-token",
    "SLACK_SIGNING_SECRET": "sandbox-signing-secret",
}


@dataclass
class SandboxWorld:
    workdir: Path
    moto: MotoServer = field(init=False)
    jira: JiraEmulator = field(init=False)
    slack: SlackEmulator = field(init=False)

    def __post_init__(self):
        self.moto = MotoServer()
        self.jira = JiraEmulator(projects=("SEC",), email=SANDBOX_SECRETS["JIRA_EMAIL"],
                                 token=SANDBOX_SECRETS["JIRA_API_TOKEN"])
        self.slack = SlackEmulator(token=SANDBOX_SECRETS["SLACK_BOT_TOKEN"])
        self._env = None

    def start(self) -> "SandboxWorld":
        self.moto.start()
        self.moto.reset()
        self.jira.start()
        self.slack.start()
        self._env = aws_environment(self.moto.url)
        self._env.__enter__()
        return self

    def stop(self) -> None:
        if self._env is not None:
            self._env.__exit__(None, None, None)
        for service in (self.slack, self.jira, self.moto):
            service.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *_):
        self.stop()

    # -- configuration

    @property
    def state_path(self) -> Path:
        return self.workdir / "layerguard.sqlite"

    def environment(self) -> dict[str, str]:
        return dict(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=self.moto.url, **SANDBOX_SECRETS)

    def write_config(self, name: str = "config.yaml", approval: dict | None = None, slack: dict | None = None,
                     **policy) -> Path:
        """A config pointing at this world's emulators; keyword arguments go under ``policy``."""
        config = {
            "aws": {"regions": [REGION]},
            "policy": {"own_organization_id": "o-ourorg1234", **policy},
            "jira": {"url": self.jira.url, "project": "SEC", "issue_type": "Task"},
            "slack": {"api_url": self.slack.api_url, "channel": "#security-alerts", "approvers": ["U0APPROVER"],
                      **(slack or {})},
            "state": {"path": str(self.state_path)},
            "approval": approval or {},
            "service": {"check_interval": "1s"},
            # moto implements no CloudTrail LookupEvents; that part is tested with botocore's Stubber.
            "investigation": {"lookup_activity": False},
        }
        path = self.workdir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- AWS

    def client(self, service: str, account_id: str = ACCOUNT_ID):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def publish_layer(self, name: str, files: dict[str, str] | None = None) -> dict:
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for path, content in (files or {"python/util.py": "def helper():\n    return 42\n"}).items():
                zf.writestr(path, content)
        return self.client("lambda").publish_layer_version(
            LayerName=name, Description=f"{name} shared utilities", Content={"ZipFile": archive.getvalue()},
            CompatibleRuntimes=["python3.11"])

    def create_function(self, name: str, layer_version_arns: list[str], publish: bool = True) -> dict:
        iam = self.client("iam")
        try:
            role = iam.get_role(RoleName="layerguard-demo-fn")["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName="layerguard-demo-fn", AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("handler.py", "def handler(event, context):\n    return {}\n")
        return self.client("lambda").create_function(
            FunctionName=name, Runtime="python3.11", Role=role, Handler="handler.handler",
            Code={"ZipFile": archive.getvalue()}, Layers=layer_version_arns, Publish=publish)

    def grant(self, layer: str, version: int, statement_id: str, principal: str, organization_id: str = "") -> None:
        kwargs = dict(LayerName=layer, VersionNumber=version, StatementId=statement_id,
                      Action="lambda:GetLayerVersion", Principal=principal)
        if organization_id:
            kwargs["OrganizationId"] = organization_id
        self.client("lambda").add_layer_version_permission(**kwargs)

    def policy_statements(self, layer: str, version: int) -> list[dict]:
        client = self.client("lambda")
        try:
            return json.loads(client.get_layer_version_policy(LayerName=layer, VersionNumber=version)["Policy"])["Statement"]
        except client.exceptions.ResourceNotFoundException:
            return []


def cloudtrail_record(layer: str, version: int | str, principal: str, statement_id: str,
                      organization_id: str = "", event_id: str | None = None,
                      actor_arn: str = f"arn:aws:iam::{ACCOUNT_ID}:user/dev-alice",
                      user_agent: str = "aws-cli/2.17.60 md/command#lambda.add-layer-version-permission",
                      source_ip: str = "203.0.113.45") -> dict:
    """A successful AddLayerVersionPermission record, shaped as CloudTrail writes it."""
    params = {"layerName": layer, "versionNumber": version, "statementId": statement_id,
              "action": "lambda:GetLayerVersion", "principal": principal}
    if organization_id:
        params["organizationId"] = organization_id
    return {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLEDEVALICE", "arn": actor_arn,
                         "accountId": ACCOUNT_ID, "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "dev-alice"},
        "eventTime": "2026-12-04T09:15:00Z",
        "eventSource": "lambda.amazonaws.com",
        "eventName": "AddLayerVersionPermission20181031",
        "awsRegion": REGION,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": params,
        "responseElements": {"statement": "{}", "revisionId": str(uuid.uuid4())},
        "requestID": str(uuid.uuid4()),
        "eventID": event_id or str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT_ID,
        "eventCategory": "Management",
    }
