"""Ticket and Slack rendering, with attacker-controlled text in every event field."""

import json
import re
from dataclasses import replace

import pytest

from actions.approval import ActionId, approval_blocks, escape_mrkdwn, notification_blocks
from actions.collect_context import Consumer, LayerContext
from actions.contain import ContainmentResult
from actions.ticket import escape_jira, render_repeat_comment, render_ticket
from integrations.aws import LayerPolicy
from integrations.sandbox.world import cloudtrail_record
from playbooks.classify import Response
from playbooks.config import DEFAULT_PRIORITIES
from playbooks.detection import Actor, detection_from_record
from playbooks.layer_exposure import assess
from tests.unit.test_config import minimal_config

HOSTILE = {
    "link": "[x|http://evil.example/steal]",
    "macro": "{noformat}{html}<script>",
    "mention": "<!channel> <!here> <@U0BOSS>",
    "slack_link": "<https://evil.example|click me>",
    "table": "a|b||c",
    "newline": "ok\nh1. Injected heading\n* bullet",
    "bidi": "safe\u202edetacilpmoc",
}


def hostile_detection():
    record = cloudtrail_record("payments-utils", 3, "*", "pub")
    detection = detection_from_record(record, "test")
    ua = " ".join(HOSTILE.values())
    return replace(detection, user_agent=ua, statement_id=HOSTILE["link"] + HOSTILE["macro"],
                   source_ip=HOSTILE["slack_link"],
                   actor=Actor(arn="arn:aws:iam::123456789012:user/" + HOSTILE["mention"], type=HOSTILE["table"]))


def context():
    consumers = (Consumer("arn:aws:lambda:us-east-1:123456789012:function:checkout:1", "checkout", "1",
                          "arn:aws:lambda:us-east-1:123456789012:layer:payments-utils:3", True),)
    policy = LayerPolicy(({"Sid": "partner", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                           "Action": "lambda:GetLayerVersion"},), "rev-1")
    layer = {"Description": "utils [x|http://evil]", "CreatedDate": "2026-12-01T10:00:00.000+0000",
             "CompatibleRuntimes": ["python3.11"], "Content": {"CodeSize": 2048, "CodeSha256": "abc="}}
    return LayerContext(layer, policy, consumers)


CONTAINED = ContainmentResult("contained", ({"Sid": "pub[x|http://evil]", "Principal": "*"},), (), 3)


def render():
    detection = hostile_detection()
    assessment = assess(detection, minimal_config())
    classification, response = assessment.classification, assessment.response
    return detection, render_ticket("LG-1", detection, classification, response, CONTAINED, context(),
                                    dict(DEFAULT_PRIORITIES))


def test_ticket_fields():
    detection, fields = render()
    assert fields.summary == "[LayerGuard] public grant on Lambda layer payments-utils:3 in 123456789012/us-east-1"
    assert set(fields.labels) >= {"layerguard", "public", "T1648", "T1578.005"}
    assert all(" " not in label for label in fields.labels)
    assert fields.priority == "Highest"
    for heading in ("Actions taken", "Grant", "Actor", "Layer version", "Current layer version policy",
                    "Consumers in", "Investigation checklist", "Remediation", "MITRE ATT&CK"):
        assert f"h3. {heading}" in fields.description
    assert "function:checkout:1" in fields.description
    assert "Verified" in fields.description


def _unescaped(text: str, char: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(char), text) if m.start() == 0 or text[m.start() - 1] != "\\"]


def test_ticket_escapes_all_event_text():
    _, fields = render()
    body = fields.description
    # No hostile link, macro, heading or bidi override survives as markup.
    assert "[x|http" not in body and "{noformat}" not in body and "{html}" not in body
    assert "http://evil" not in body and "https://evil" not in body
    assert "\nh1. Injected" not in body and "\u202e" not in body
    # Every table row keeps exactly its two cells: hostile '|' is escaped.
    for line in body.splitlines():
        if line.startswith("||") and not line.startswith("||Sid") and not line.startswith("||Function"):
            assert len(_unescaped(line, "|")) == 4, line


@pytest.mark.parametrize("value, expected", [
    ("[x|http://evil]", r"\[x\|http\[:\]//evil\]"),
    ("{noformat}", r"\{noformat\}"),
    ("payments-shared-utils", "payments-shared-utils"),
    ("-strike-", r"\-strike\-"),
    ("a\nb", "a b"),
    ("", "-"),
])
def test_escape_jira(value, expected):
    assert escape_jira(value) == expected


def test_repeat_comment_escapes():
    comment = render_repeat_comment(hostile_detection(), None)
    assert "[x|http" not in comment and "<!channel>" in comment.replace("\\", "") and "{noformat}" not in comment


def all_text(blocks) -> str:
    return json.dumps(blocks)


def test_approval_message_has_both_buttons_carrying_the_case_id():
    detection = hostile_detection()
    assessment = assess(replace(detection, principal="210987654321"), minimal_config())
    classification, _ = assessment.classification, assessment.response
    blocks = approval_blocks("LG-7", detection, classification, context(), "SEC-9", "http://jira/browse/SEC-9")
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [(ActionId.REVOKE.value, "LG-7"),
                                                             (ActionId.KEEP.value, "LG-7")]
    assert "<http://jira/browse/SEC-9|SEC-9>" in all_text(blocks)


def test_slack_text_is_escaped():
    detection = hostile_detection()
    assessment = assess(detection, minimal_config())
    classification, _ = assessment.classification, assessment.response
    for blocks in (approval_blocks("LG-7", detection, classification, context(), "", ""),
                   notification_blocks("LG-7", detection, classification, context(), CONTAINED, "SEC-1", "http://j")):
        text = all_text(blocks)
        assert "<!channel>" not in text and "<!here>" not in text and "<@U0BOSS>" not in text
        assert "<https://evil" not in text
        assert "&lt;!channel&gt;" in text


def test_escape_mrkdwn():
    assert escape_mrkdwn("<!channel> & <https://x|y>") == "&lt;!channel&gt; &amp; &lt;https://x|y&gt;"


def test_notification_for_contained_grant_names_removed_statements():
    detection = hostile_detection()
    assessment = assess(detection, minimal_config())
    classification, _ = assessment.classification, assessment.response
    blocks = notification_blocks("LG-7", detection, classification, context(), CONTAINED, "SEC-1", "http://j")
    assert "removed and verified" in all_text(blocks)
    [restore] = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert (restore["action_id"], restore["value"]) == (ActionId.RESTORE.value, "LG-7")


def test_describe_actions_for_approval():
    detection = replace(hostile_detection(), principal="210987654321")
    assessment = assess(detection, minimal_config())
    classification, response = assessment.classification, assessment.response
    fields = render_ticket("LG-2", detection, classification, response, None, context(), dict(DEFAULT_PRIORITIES))
    assert response is Response.APPROVE
    assert "Approval requested in Slack" in fields.description
    assert fields.priority == "High"
