"""Related CloudTrail activity around the grant, as a timeline (read-only).

``LookupEvents`` filters on one attribute per call, so each relevant event name is
looked up over the window and the records are kept when they concern this layer or
this actor. Calls go through the shared 2-per-second limiter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from integrations.aws import lookup_events
from playbooks.detection import Detection

RELATED_EVENT_NAMES = (
    "PublishLayerVersion20181031",
    "AddLayerVersionPermission20181031",
    "RemoveLayerVersionPermission20181031",
    "DeleteLayerVersion20181031",
    "UpdateFunctionConfiguration20150331v2",
    "CreateFunction20150331",
)


@dataclass(frozen=True)
class ActivityEvent:
    time: str
    event_name: str
    actor: str
    summary: str
    event_id: str


def _layer_matches(value: object, detection: Detection) -> bool:
    text = str(value or "")
    return text == detection.layer_name or text == detection.layer_arn or text.startswith(detection.layer_arn + ":")


def relate(record: dict, detection: Detection) -> str | None:
    """Why this CloudTrail record matters for the detection, or None (pure)."""
    name = str(record.get("eventName", ""))
    params = record.get("requestParameters") or {}
    actor = (record.get("userIdentity") or {}).get("arn", "")
    same_actor = bool(actor) and actor == detection.actor.arn
    if name.startswith(("PublishLayerVersion", "DeleteLayerVersion", "RemoveLayerVersionPermission")):
        if _layer_matches(params.get("layerName"), detection):
            version = params.get("versionNumber")
            return f"{name.rstrip('0123456789v')} on this layer" + (f" (version {version})" if version else "")
        return None
    if name.startswith("AddLayerVersionPermission"):
        if record.get("eventID") == detection.event_id:
            return None
        on_layer = _layer_matches(params.get("layerName"), detection)
        if on_layer or same_actor:
            target = "this layer" if on_layer else f"layer {params.get('layerName')}"
            return f"another grant on {target} to {params.get('principal')}" + (" by the same actor" if same_actor else "")
        return None
    if name.startswith(("UpdateFunctionConfiguration", "CreateFunction")):
        layers = params.get("layers") or []
        if any(_layer_matches(layer, detection) for layer in layers):
            return f"function {params.get('functionName')} attached this layer"
    return None


def related_activity(cloudtrail_client, detection: Detection, before: timedelta, after: timedelta,
                     event_names: tuple[str, ...] = RELATED_EVENT_NAMES) -> list[ActivityEvent]:
    moment = _parse_time(detection.event_time)
    start, end = moment - before, min(moment + after, datetime.now(timezone.utc))
    timeline: list[ActivityEvent] = []
    for name in event_names:
        for event in lookup_events(cloudtrail_client, name, start, end):
            try:
                record = json.loads(event.get("CloudTrailEvent") or "{}")
            except json.JSONDecodeError:
                continue
            why = relate(record, detection)
            if why:
                timeline.append(ActivityEvent(
                    time=str(record.get("eventTime") or event.get("EventTime")), event_name=name,
                    actor=(record.get("userIdentity") or {}).get("arn", "") or str(event.get("Username", "")),
                    summary=why, event_id=str(record.get("eventID") or event.get("EventId", ""))))
    return sorted(timeline, key=lambda e: e.time)


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc)
