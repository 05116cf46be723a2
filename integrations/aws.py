"""AWS: sessions per account (assume role), and the few Lambda calls LayerGuard makes.

Every call goes through ``aws_retry``; botocore's own retries are off (see retry.py).
Error codes are interpreted here and nowhere else.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import boto3
import botocore.exceptions

from integrations.retry import BOTOCORE_CONFIG, aws_error_code, aws_retry

NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})
STALE_REVISION_CODES = frozenset({"PreconditionFailedException"})
CONFLICT_CODES = frozenset({"ResourceConflictException"})


class AwsActionError(RuntimeError):
    """An AWS call LayerGuard needed failed; the message says which and why."""


class PolicyChanged(Exception):
    """The policy's revision id moved between our read and our write."""


class StatementAlreadyGone(Exception):
    """The statement (or the whole policy) no longer exists."""


class StatementExists(Exception):
    """A statement with this Sid is already in the policy."""


@dataclass(frozen=True)
class LayerPolicy:
    statements: tuple[dict, ...] = ()
    revision_id: str = ""
    exists: bool = True


FUNCTION_FIELDS = ("FunctionName", "FunctionArn", "Version", "Layers")


def _slim_function_list(response_dict, customized_response_dict, **_):
    """Consumer discovery needs four fields of each function; botocore's model-driven parser
    spends ~12 ms on every 50-function page of all of them, which at 10,000 functions is
    more than the paging itself. Parse the page with json and hand botocore only NextMarker."""
    if response_dict.get("status_code") != 200 or not isinstance(response_dict.get("body"), bytes):
        return
    page = json.loads(response_dict["body"])
    customized_response_dict["Functions"] = [
        {name: function[name] for name in FUNCTION_FIELDS if name in function} for function in page.get("Functions", [])]
    response_dict["body"] = json.dumps({"NextMarker": page["NextMarker"]} if page.get("NextMarker") else {}).encode()


@dataclass
class AwsClients:
    """Builds boto3 clients per (account, region); assumes ``assume_role`` when configured.

    ``session_factory`` follows Cloud Custodian's habit: tests and the CLI decide
    where credentials come from; actions never construct sessions themselves.
    """

    assume_role: str = ""
    external_id: str = ""
    session_factory: Callable[[], boto3.session.Session] = boto3.session.Session
    _clients: dict[str, Any] = field(default_factory=dict)
    _sessions: dict[str, boto3.session.Session] = field(default_factory=dict)
    _account_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lambda_client(self, account_id: str, region: str):
        return self.client("lambda", account_id, region)

    def client(self, service: str, account_id: str, region: str):
        """One client per (service, account, region), reused: building one costs more than a call.

        Investigation builds clients from several threads; a boto3 session is not thread
        safe, so each account's session and clients are built under that account's lock
        (accounts still assume their roles concurrently)."""
        key = f"{service}/{account_id}/{region}"
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            account_lock = self._account_locks.setdefault(account_id, threading.Lock())
        with account_lock:
            client = self._clients.get(key)
            if client is None:
                session = self._sessions.get(account_id) or self._new_session(account_id)
                self._sessions[account_id] = session
                client = session.client(service, region_name=region, config=BOTOCORE_CONFIG)
                if service == "lambda":
                    client.meta.events.register("before-parse.lambda.ListFunctions", _slim_function_list)
                self._clients[key] = client
        return client

    def _new_session(self, account_id: str) -> boto3.session.Session:
        base = self.session_factory()
        if self.assume_role and account_id:  # "" is the responder's own account
            return self._assumed(base, self.assume_role.format(account_id=account_id))
        return base

    def _assumed(self, base: boto3.session.Session, role_arn: str) -> boto3.session.Session:
        sts = base.client("sts", config=BOTOCORE_CONFIG)
        kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": "layerguard"}
        if self.external_id:
            kwargs["ExternalId"] = self.external_id
        try:
            creds = aws_retry(sts.assume_role)(**kwargs)["Credentials"]
        except botocore.exceptions.ClientError as exc:
            raise AwsActionError(f"cannot assume {role_arn}: {aws_error_code(exc)}") from exc
        return boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )


# ----------------------------------------------------------------------------- Lambda layers


@aws_retry
def get_layer_policy(client, layer_arn: str, version: int) -> LayerPolicy:
    try:
        response = client.get_layer_version_policy(LayerName=layer_arn, VersionNumber=version)
    except botocore.exceptions.ClientError as exc:
        if aws_error_code(exc) in NOT_FOUND_CODES:
            # No policy at all, or no such layer version: either way nobody is granted.
            message = exc.response.get("Error", {}).get("Message", "")
            return LayerPolicy(exists="policy" in message.lower())
        raise
    document = json.loads(response["Policy"])
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    return LayerPolicy(tuple(statements), response.get("RevisionId", ""))


@aws_retry
def remove_statement(client, layer_arn: str, version: int, statement_id: str, revision_id: str = "") -> None:
    kwargs: dict[str, Any] = {"LayerName": layer_arn, "VersionNumber": version, "StatementId": statement_id}
    if revision_id:
        kwargs["RevisionId"] = revision_id
    try:
        client.remove_layer_version_permission(**kwargs)
    except botocore.exceptions.ClientError as exc:
        code = aws_error_code(exc)
        if code in NOT_FOUND_CODES:
            raise StatementAlreadyGone(statement_id) from exc
        if code in STALE_REVISION_CODES:
            raise PolicyChanged(statement_id) from exc
        raise


@aws_retry
def add_statement(client, layer_arn: str, version: int, statement_id: str, principal: str,
                  organization_id: str = "", action: str = "lambda:GetLayerVersion") -> None:
    kwargs: dict[str, Any] = {"LayerName": layer_arn, "VersionNumber": version, "StatementId": statement_id,
                              "Action": action, "Principal": principal}
    if organization_id:
        kwargs["OrganizationId"] = organization_id
    try:
        client.add_layer_version_permission(**kwargs)
    except botocore.exceptions.ClientError as exc:
        if aws_error_code(exc) in CONFLICT_CODES:
            raise StatementExists(statement_id) from exc
        raise


@aws_retry
def get_layer_version(client, layer_arn: str, version: int) -> dict | None:
    try:
        response = client.get_layer_version(LayerName=layer_arn, VersionNumber=version)
    except botocore.exceptions.ClientError as exc:
        if aws_error_code(exc) in NOT_FOUND_CODES:
            return None
        raise
    response.pop("ResponseMetadata", None)
    return response


def iter_function_configurations(client) -> Iterator[dict]:
    """Every function configuration in the client's region, published versions included."""
    marker = None
    while True:
        kwargs: dict[str, Any] = {"FunctionVersion": "ALL", "MaxItems": 50}
        if marker:
            kwargs["Marker"] = marker
        page = aws_retry(client.list_functions)(**kwargs)
        yield from page.get("Functions", [])
        marker = page.get("NextMarker")
        if not marker:
            return


def list_layer_versions(client, layer_arn: str) -> list[int]:
    versions: list[int] = []
    marker = None
    while True:
        kwargs: dict[str, Any] = {"LayerName": layer_arn, "MaxItems": 50}
        if marker:
            kwargs["Marker"] = marker
        page = aws_retry(client.list_layer_versions)(**kwargs)
        versions += [int(v["Version"]) for v in page.get("LayerVersions", [])]
        marker = page.get("NextMarker")
        if not marker:
            return sorted(versions)


def list_aliases(client, function_name: str) -> list[dict]:
    aliases: list[dict] = []
    marker = None
    while True:
        kwargs: dict[str, Any] = {"FunctionName": function_name}
        if marker:
            kwargs["Marker"] = marker
        page = aws_retry(client.list_aliases)(**kwargs)
        aliases += page.get("Aliases", [])
        marker = page.get("NextMarker")
        if not marker:
            return aliases


def organization_account_ids(client) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = aws_retry(client.list_accounts)(**({"NextToken": token} if token else {}))
        ids += [a["Id"] for a in page.get("Accounts", []) if a.get("Status", "ACTIVE") == "ACTIVE"]
        token = page.get("NextToken")
        if not token:
            return ids


class RateLimiter:
    """At most ``per_second`` calls a second, across threads (CloudTrail LookupEvents allows 2)."""

    def __init__(self, per_second: float, clock=None, sleep=None):
        self.interval = 1.0 / per_second
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            self.sleep(delay)


LOOKUP_EVENTS_LIMIT = RateLimiter(2.0)


def lookup_events(client, event_name: str, start, end, max_pages: int = 10,
                  limiter: RateLimiter = LOOKUP_EVENTS_LIMIT) -> list[dict]:
    """CloudTrail management events of one name in [start, end], newest first."""
    events: list[dict] = []
    token = None
    for _ in range(max_pages):
        kwargs: dict[str, Any] = {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": event_name}],
                                  "StartTime": start, "EndTime": end, "MaxResults": 50}
        if token:
            kwargs["NextToken"] = token
        limiter.wait()
        page = aws_retry(client.lookup_events)(**kwargs)
        events += page.get("Events", [])
        token = page.get("NextToken")
        if not token:
            break
    return events


def download(url: str, max_bytes: int, timeout: float = 30.0) -> bytes:
    """GET a (pre-signed) URL, streamed, refusing more than ``max_bytes``."""
    import requests

    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise ValueError(f"layer content is {declared} bytes, over the {max_bytes}-byte cap")
        chunks, total = [], 0
        for chunk in response.iter_content(64 * 1024):
            total += len(chunk)
            if total > max_bytes:
                raise ValueError(f"layer content exceeds the {max_bytes}-byte cap")
            chunks.append(chunk)
    return b"".join(chunks)


def send_message(client, queue_url: str, body: str) -> None:
    """One SQS message (the Lambda deployment's nudge to run recorded jobs)."""
    aws_retry(client.send_message)(QueueUrl=queue_url, MessageBody=body)
