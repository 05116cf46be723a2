"""Intake: every input shape becomes one immutable Detection (pure, no I/O).

Accepted, auto-detected per document:
- a single CloudTrail record;
- a CloudTrail log file ``{"Records": [...]}`` (plain or gzip);
- an EventBridge "AWS API Call via CloudTrail" event;
- an Elastic Security alert or ECS document from the AWS CloudTrail integration
  (``event.original`` first, then ``aws.cloudtrail.flattened.request_parameters``,
  then the flat ``aws.cloudtrail.request_parameters`` string);
- JSON Lines of any of these, or a JSON array of them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

EVENT_NAME_PREFIX = "AddLayerVersionPermission"
EVENT_SOURCE = "lambda.amazonaws.com"


class IntakeError(ValueError):
    """A document that cannot be read as a detection; names where and which field."""

    def __init__(self, location: str, problem: str):
        super().__init__(f"{location}: {problem}")
        self.location = location
        self.problem = problem


@dataclass(frozen=True)
class Actor:
    arn: str = ""
    type: str = ""
    principal_id: str = ""
    access_key_id: str = ""
    session_issuer_arn: str = ""
    mfa_authenticated: bool | None = None
    account_id: str = ""
    invoked_by: str = ""


@dataclass(frozen=True)
class Detection:
    event_id: str
    event_time: str
    account_id: str  # recipientAccountId: the account the call was made in
    region: str
    layer_name: str
    layer_arn: str  # unversioned layer ARN
    version: int
    statement_id: str
    principal: str
    organization_id: str
    action: str
    actor: Actor
    source_ip: str
    user_agent: str
    event_name: str
    source_format: str
    location: str = ""

    @property
    def layer_version_arn(self) -> str:
        return f"{self.layer_arn}:{self.version}"

    @property
    def layer_account_id(self) -> str:
        return self.layer_arn.split(":")[4]


@dataclass(frozen=True)
class Skipped:
    location: str
    reason: str
    event_id: str = ""


@dataclass(frozen=True)
class Document:
    location: str
    body: Any = field(repr=False)


# --------------------------------------------------------------------------- reading


def read_documents(data: bytes, source: str) -> Iterator[Document]:
    """Split raw input (JSON, JSON Lines, gzip of either) into located documents."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IntakeError(source, f"not a readable gzip file ({exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError(source, f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise IntakeError(source, "empty input")
    try:
        yield Document(source, json.loads(text))
        return
    except RecursionError:
        raise IntakeError(source, "JSON nested too deeply") from None
    except json.JSONDecodeError as whole_error:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise IntakeError(source, f"invalid JSON: {whole_error.msg} at line "
                              f"{whole_error.lineno} column {whole_error.colno}") from None
    for number, line in lines:
        where = f"{source} line {number}"
        try:
            yield Document(where, json.loads(line))
        except RecursionError:
            raise IntakeError(where, "JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise IntakeError(where, f"invalid JSON: {exc.msg} at column {exc.colno}") from None


def detections_from_document(doc: Document) -> Iterator[Detection | Skipped]:
    """Every CloudTrail record inside one document, as a Detection or a Skipped."""
    for location, record, source_format in _cloudtrail_records(doc.body, doc.location, depth=0):
        yield detection_from_record(record, location, source_format)


def _cloudtrail_records(body: Any, location: str, depth: int) -> Iterator[tuple[str, dict, str]]:
    if depth > 3:
        raise IntakeError(location, "documents nested too deeply")
    if isinstance(body, list):
        for index, item in enumerate(body):
            yield from _cloudtrail_records(item, f"{location}[{index}]", depth + 1)
        return
    if not isinstance(body, dict):
        raise IntakeError(location, f"expected a JSON object, got {_type_name(body)}")
    if "Records" in body:
        records = body["Records"]
        if not isinstance(records, list):
            raise IntakeError(location, f"field 'Records' must be a list, got {_type_name(records)}")
        for index, record in enumerate(records):
            where = f"{location} Records[{index}]"
            if not isinstance(record, dict):
                raise IntakeError(where, f"expected a JSON object, got {_type_name(record)}")
            yield where, record, "cloudtrail-log"
        return
    if "detail-type" in body or ("detail" in body and "source" in body):
        detail = body.get("detail")
        if not isinstance(detail, dict):
            raise IntakeError(location, "EventBridge event without an object in field 'detail'")
        yield location, detail, "eventbridge"
        return
    if "eventName" in body or "eventSource" in body:
        yield location, body, "cloudtrail"
        return
    ecs = _unflatten(body)
    if isinstance(ecs.get("aws"), dict) or isinstance(ecs.get("event"), dict):
        yield location, _record_from_ecs(ecs, location), "elastic"
        return
    raise IntakeError(location, "not a CloudTrail record, CloudTrail log file, EventBridge "
                      "event or Elastic/ECS document (no eventName, Records, detail or aws.cloudtrail)")


# --------------------------------------------------------------------------- Elastic / ECS


def _unflatten(doc: Mapping[str, Any]) -> dict:
    """Alerts often carry dotted keys ("aws.cloudtrail.user_identity.arn"); nest them."""
    nested: dict = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            value = _unflatten(value)
        parts = key.split(".") if isinstance(key, str) else [key]
        target = nested
        for part in parts[:-1]:
            existing = target.get(part)
            if not isinstance(existing, dict):
                existing = target[part] = {}
            target = existing
        last = parts[-1]
        if isinstance(target.get(last), dict) and isinstance(value, dict):
            target[last] = {**target[last], **value}
        else:
            target[last] = value
    return nested


def _path(doc: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return default
        doc = doc[part]
    return doc


def _record_from_ecs(ecs: dict, location: str) -> dict:
    original = _path(ecs, "event.original")
    if isinstance(original, str) and original.strip():
        try:
            record = json.loads(original)
        except json.JSONDecodeError as exc:
            raise IntakeError(location, f"field 'event.original' is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise IntakeError(location, "field 'event.original' is not a JSON object")
        # The alert's outcome wins if the original lacks an error code.
        if _path(ecs, "event.outcome") == "failure" and not record.get("errorCode"):
            record["errorCode"] = "failure (event.outcome)"
        return record

    trail = _path(ecs, "aws.cloudtrail", {}) or {}
    params = _path(trail, "flattened.request_parameters")
    if not isinstance(params, dict):
        flat = trail.get("request_parameters")
        params = parse_flat_map(flat, location) if isinstance(flat, str) else {}
    identity = trail.get("user_identity") or {}
    session = identity.get("session_context") or {}
    error_code = trail.get("error_code") or _path(ecs, "error.code")
    if _path(ecs, "event.outcome") == "failure" and not error_code:
        error_code = "failure (event.outcome)"
    return {
        "eventID": _path(ecs, "event.id") or _path(ecs, "kibana.alert.original_event.id") or "",
        "eventName": _path(ecs, "event.action") or "",
        "eventSource": _path(ecs, "event.provider") or "",
        "eventTime": ecs.get("@timestamp") or "",
        "awsRegion": _path(ecs, "cloud.region") or "",
        "recipientAccountId": trail.get("recipient_account_id") or _path(ecs, "cloud.account.id") or "",
        "requestParameters": params,
        "errorCode": error_code,
        "sourceIPAddress": _path(ecs, "source.ip") or _path(ecs, "source.address") or "",
        "userAgent": _path(ecs, "user_agent.original") or "",
        "userIdentity": {
            "type": identity.get("type") or "",
            "arn": identity.get("arn") or "",
            "principalId": identity.get("principal_id") or "",
            "accessKeyId": identity.get("access_key_id") or "",
            "accountId": _path(ecs, "cloud.account.id") or "",
            "sessionContext": {
                "attributes": {"mfaAuthenticated": session.get("mfa_authenticated")},
                "sessionIssuer": {"arn": _path(session, "session_issuer.arn") or ""},
            },
        },
    }


_FLAT_KEYS = ("layerName", "versionNumber", "statementId", "action", "principal",
              "organizationId", "revisionId")


def parse_flat_map(text: str, location: str = "request_parameters") -> dict[str, str]:
    """Parse Java's Map.toString() form ``{layerName=x, principal=*, ...}``.

    Values may themselves hold ``,`` and ``=``, so the string is split only where a
    known request-parameter key starts; unknown keys stay inside the value before them.
    """
    inner = text.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise IntakeError(location, "field 'aws.cloudtrail.request_parameters' is not of the form {key=value, ...}")
    inner = inner[1:-1]
    keys = "|".join(_FLAT_KEYS)
    starts = list(re.finditer(rf"(?:^|, )({keys})=", inner))
    result: dict[str, str] = {}
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(inner)
        key = match.group(1)
        if key in result:
            raise IntakeError(location, f"field 'aws.cloudtrail.request_parameters' names {key!r} twice")
        result[key] = inner[match.end():end]
    return result


# --------------------------------------------------------------------------- records


def detection_from_record(record: dict, location: str, source_format: str = "cloudtrail") -> Detection | Skipped:
    event_id = _text(record.get("eventID"))
    where = f"{location} (event {event_id})" if event_id else location
    event_name = _text(record.get("eventName"))
    event_source = _text(record.get("eventSource"))
    if not event_name.startswith(EVENT_NAME_PREFIX) or event_source != EVENT_SOURCE:
        return Skipped(where, f"not an {EVENT_NAME_PREFIX} call from {EVENT_SOURCE} "
                              f"(eventName={event_name or '-'}, eventSource={event_source or '-'})", event_id)
    error_code = record.get("errorCode")
    if error_code:
        return Skipped(where, f"the call failed (errorCode={_text(error_code)}), nothing was granted", event_id)

    params = record.get("requestParameters")
    if not isinstance(params, dict):
        raise IntakeError(where, "field 'requestParameters' is missing or not an object")
    layer = _required_text(params, "layerName", where)
    principal = _required_text(params, "principal", where)
    version = _version(params.get("versionNumber"), where)
    region = _text(record.get("awsRegion"))
    account = _text(record.get("recipientAccountId")) or _text(_path(record, "userIdentity.accountId"))
    layer_arn, layer_name = _layer_arn(layer, region, account, where)
    if not region:
        region = layer_arn.split(":")[3]
    if not account:
        account = layer_arn.split(":")[4]
    if not event_id:
        # Without an id a replay could not be recognised; derive a stable one.
        event_id = "sha256:" + hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:32]

    return Detection(
        event_id=event_id,
        event_time=_text(record.get("eventTime")),
        account_id=account,
        region=region,
        layer_name=layer_name,
        layer_arn=layer_arn,
        version=version,
        statement_id=_text(params.get("statementId")),
        principal=principal,
        organization_id=_text(params.get("organizationId")),
        action=_text(params.get("action")) or "lambda:GetLayerVersion",
        actor=actor_from_identity(record.get("userIdentity")),
        source_ip=_text(record.get("sourceIPAddress")),
        user_agent=_text(record.get("userAgent")),
        event_name=event_name,
        source_format=source_format,
        location=location,
    )


def actor_from_identity(identity: Any) -> Actor:
    if not isinstance(identity, dict):
        return Actor()
    session = identity.get("sessionContext") if isinstance(identity.get("sessionContext"), dict) else {}
    attributes = session.get("attributes") if isinstance(session.get("attributes"), dict) else {}
    issuer = session.get("sessionIssuer") if isinstance(session.get("sessionIssuer"), dict) else {}
    mfa = attributes.get("mfaAuthenticated")
    return Actor(
        arn=_text(identity.get("arn")),
        type=_text(identity.get("type")),
        principal_id=_text(identity.get("principalId")),
        access_key_id=_text(identity.get("accessKeyId")),
        session_issuer_arn=_text(issuer.get("arn")),
        mfa_authenticated=None if mfa in (None, "") else str(mfa).lower() == "true",
        account_id=_text(identity.get("accountId")),
        invoked_by=_text(identity.get("invokedBy")),
    )


_LAYER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,140}$")
_LAYER_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):"
    r"(?P<account>\d{12}):layer:(?P<name>[A-Za-z0-9_-]{1,140})(?::\d+)?$")


def _layer_arn(layer: str, region: str, account: str, where: str) -> tuple[str, str]:
    match = _LAYER_ARN.match(layer)
    if match:
        arn = f"arn:{match['partition']}:lambda:{match['region']}:{match['account']}:layer:{match['name']}"
        return arn, match["name"]
    if not _LAYER_NAME.match(layer):
        raise IntakeError(where, f"field 'requestParameters.layerName' is neither a layer name nor a layer ARN: {layer[:200]!r}")
    if not re.fullmatch(r"[a-z]{2}(?:-[a-z]+)+-\d+", region):
        raise IntakeError(where, f"field 'awsRegion' is missing or not a region: {region[:60]!r}")
    if not re.fullmatch(r"\d{12}", account):
        raise IntakeError(where, f"field 'recipientAccountId' is missing or not a 12-digit account: {account[:60]!r}")
    return f"arn:{partition_for_region(region)}:lambda:{region}:{account}:layer:{layer}", layer


def partition_for_region(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _version(value: Any, where: str) -> int:
    if isinstance(value, bool) or value is None or value == "":
        raise IntakeError(where, "field 'requestParameters.versionNumber' is missing")
    try:
        version = int(str(value).strip())
    except ValueError:
        raise IntakeError(where, f"field 'requestParameters.versionNumber' is not a whole number: {str(value)[:40]!r}") from None
    if version < 1:
        raise IntakeError(where, f"field 'requestParameters.versionNumber' must be 1 or more, got {version}")
    return version


def _required_text(params: dict, key: str, where: str) -> str:
    value = params.get(key)
    if value is None or value == "":
        raise IntakeError(where, f"field 'requestParameters.{key}' is missing")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise IntakeError(where, f"field 'requestParameters.{key}' must be text, got {_type_name(value)}")
    return str(value).strip()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number",
            bool: "true/false", type(None): "null"}.get(type(value), type(value).__name__)


def detection_from_dict(data: dict) -> Detection:
    """Rebuild a Detection stored as a plain dict (state store, job payloads)."""
    fields = dict(data)
    fields["actor"] = Actor(**(fields.get("actor") or {}))
    return Detection(**fields)
