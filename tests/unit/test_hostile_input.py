"""Malformed and adversarial detections: each gets a clear error or a skip with a reason,
never a crash, and never markup that renders in Jira or Slack."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.approval import approval_blocks, escape_mrkdwn, notification_blocks
from actions.collect_context import LayerContext
from actions.ticket import escape_jira, render_ticket
from integrations.aws import LayerPolicy
from integrations.sandbox.world import cloudtrail_record
from playbooks.config import DEFAULT_PRIORITIES
from playbooks.detection import Detection, IntakeError, Skipped, detection_from_record, detections_from_document, read_documents
from playbooks.layer_exposure import assess
from playbooks.runner import read_input
from tests.conftest import FAULT_TALLY
from tests.unit.test_config import minimal_config

CORPUS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "hostile").iterdir())
EXPECTED = {
    "invalid-json.json": "invalid JSON",
    "truncated.json.gz": "not a readable gzip file",
    "not-an-object.json": "expected a JSON object",
    "records-not-a-list.json": "'Records' must be a list",
    "version-is-an-object.json": "versionNumber' is not a whole number",
    "principal-is-a-list.json": "principal' must be text",
    "missing-layer-name.json": "layerName' is missing",
    "request-parameters-is-text.json": "'requestParameters' is missing or not an object",
    "markup-in-layer-name.json": "neither a layer name nor a layer ARN",
    "control-chars-in-layer-name.json": "neither a layer name nor a layer ARN",
    "deep-nesting.json": "nested too deeply",
    "jsonl-with-a-bad-line.jsonl": "line 2: invalid JSON",
}
SKIPPED = {"wrong-event-source.json", "unknown-event-name.json", "failed-event.json"}
LIVE_JIRA = re.compile(r"(?<!\\)(\[[^\]]*\|[^\]]*\]|\{noformat\}|\{html\}|https?://)")
LIVE_SLACK = re.compile(r"<[!@#]|<https?:")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_gets_an_error_a_skip_or_inert_rendering(path):
    FAULT_TALLY["bad inputs tried"] += 1
    intake = read_input([str(path)])
    if path.name in EXPECTED:
        assert intake.errors, f"{path.name} was accepted"
        assert EXPECTED[path.name] in str(intake.errors[0])
        assert str(path) in str(intake.errors[0])  # names the file
    elif path.name in SKIPPED:
        [skipped] = intake.items
        assert isinstance(skipped, Skipped) and skipped.reason
    else:
        [detection] = intake.items
        assert_inert(detection)


def test_a_50_megabyte_document_is_read_or_refused_cleanly(tmp_path):
    FAULT_TALLY["bad inputs tried"] += 2
    big = tmp_path / "big.json"
    record = cloudtrail_record("payments-utils", 1, "*", "pub")
    record["padding"] = "x" * (50 * 1024 * 1024)
    big.write_text(json.dumps(record))
    intake = read_input([str(big)])
    assert not intake.errors and isinstance(intake.items[0], Detection)
    bigger = tmp_path / "bigger.json"
    bigger.write_bytes(b" " * (65 * 1024 * 1024))
    assert "larger than 64 MiB" in str(read_input([str(bigger)]).errors[0])


def assert_inert(detection: Detection):
    assessment = assess(detection, minimal_config())
    context = LayerContext(None, LayerPolicy(), ())
    fields = render_ticket("LG-1", detection, assessment.classification, assessment.response, None, context,
                           dict(DEFAULT_PRIORITIES))
    assert not LIVE_JIRA.search(fields.description), LIVE_JIRA.search(fields.description)
    assert "\nh1." not in fields.description and "\u202e" not in fields.description
    for blocks in (approval_blocks("LG-1", detection, assessment.classification, context, "", ""),
                   notification_blocks("LG-1", detection, assessment.classification, context, None, "", "")):
        text = json.dumps(blocks, ensure_ascii=False)
        assert not LIVE_SLACK.search(text), LIVE_SLACK.search(text)


# ----------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["eventName", "eventSource", "requestParameters", "Records", "detail",
                                        "detail-type", "source", "aws", "event", "userIdentity", "awsRegion",
                                        "recipientAccountId", "errorCode", "eventID"]), json_values, max_size=8))
def test_intake_never_raises_anything_but_intake_error(document):
    FAULT_TALLY["bad inputs tried"] += 1
    try:
        for raw in read_documents(json.dumps(document).encode(), "prop.json"):
            list(detections_from_document(raw))
    except IntakeError as exc:
        assert exc.location.startswith("prop.json") and exc.problem


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200), st.text(max_size=200))
def test_rendering_any_event_text_stays_inert(user_agent, statement_id, actor_arn):
    FAULT_TALLY["bad inputs tried"] += 1
    record = cloudtrail_record("payments-utils", 1, "*", statement_id or "s", user_agent=user_agent)
    record["userIdentity"]["arn"] = actor_arn
    detection = detection_from_record(record, "prop")
    assert_inert(detection)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_escapers(text):
    FAULT_TALLY["bad inputs tried"] += 1
    jira = escape_jira(text)
    assert not re.search(r"(?<!\\)[\[\]{}|]", jira)
    assert "\n" not in jira and "\r" not in jira and "\\\\" not in jira  # "\\" is a Jira line break
    slack = escape_mrkdwn(text)
    assert "<" not in slack and ">" not in slack
    assert re.sub(r"&(amp|lt|gt);", "", slack).count("&") == 0
