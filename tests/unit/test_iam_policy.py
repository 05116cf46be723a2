"""deploy/iam-policy.json lists exactly the AWS actions the code calls: least privilege
that does not break the day a new call is added."""

import json
import re
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"lambda": "lambda", "cloudtrail": "cloudtrail", "organizations": "organizations", "sts": "sts",
            "dynamodb": "dynamodb", "sqs": "sqs"}
# How the code names its clients: lambda_client.x(...), client.x(...), sts.x(...), aws_retry(client.x)(...),
# and the DynamoDB store's self.dynamodb.x(...) and self._call("x", ...)
CALL = re.compile(r"\b(?:client|lambda_client|sts|self\.dynamodb)\.([a-z][a-z0-9_]+)\b|\b_call\(\"([a-z_]+)\"")


# Operations that IAM does not authorise by their own name.
IAM_ACTIONS = {
    # a transaction is authorised item by item: the store's transactions put, update and delete
    "dynamodb:TransactWriteItems": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
}


def operations_by_method() -> dict[str, set[str]]:
    session = botocore.session.get_session()
    methods: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for operation in session.get_service_model(service).operation_names:
            action = f"{prefix}:{operation}"
            methods.setdefault(xform_name(operation), set()).update(IAM_ACTIONS.get(action, {action}))
    return methods


def actions_called() -> set[str]:
    methods = operations_by_method()
    called: set[str] = set()
    for folder in ("actions", "integrations", "playbooks"):
        for path in (ROOT / folder).rglob("*.py"):
            if "sandbox" in path.parts:
                continue  # the sandbox builds the demo world; it is not the responder
            for names in CALL.findall(path.read_text()):
                called |= set().union(*(methods.get(name, set()) for name in names if name))
    return called


def policy_actions() -> set[str]:
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    actions: set[str] = set()
    for statement in policy["Statement"]:
        value = statement["Action"]
        actions |= {value} if isinstance(value, str) else set(value)
    return actions


def test_every_action_the_code_calls_is_in_the_policy():
    missing = actions_called() - policy_actions()
    assert not missing, f"add to deploy/iam-policy.json: {sorted(missing)}"


def test_the_policy_grants_nothing_the_code_does_not_call():
    unused = policy_actions() - actions_called()
    assert not unused, f"remove from deploy/iam-policy.json: {sorted(unused)}"
