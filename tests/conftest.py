import copy
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"


def load_sample(name: str):
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def truststack_event():
    """EventBridge event of an AddLayerVersionPermission by an assumed role (public sample)."""
    return copy.deepcopy(load_sample("truststack_eventbridge_addlayerversionpermission_assumedrole.json"))


@pytest.fixture
def elastic_doc():
    """An ECS document from Elastic's CloudTrail integration (public sample), turned into a layer grant."""
    doc = copy.deepcopy(load_sample("elastic_integrations_cloudtrail_test-add-permission-json.log-expected.json")["expected"][0])
    original = json.loads(doc["event"]["original"])
    original.update(eventName="AddLayerVersionPermission20181031", recipientAccountId="111122223333",
                    requestParameters={"layerName": "shared-deps", "versionNumber": 4, "statementId": "pub",
                                       "action": "lambda:GetLayerVersion", "principal": "*"})
    doc["event"]["original"] = json.dumps(original)
    doc["event"]["action"] = "AddLayerVersionPermission20181031"
    doc["aws"]["cloudtrail"]["recipient_account_id"] = "111122223333"
    doc["cloud"]["account"]["id"] = "111122223333"
    doc["aws"]["cloudtrail"]["flattened"]["request_parameters"] = {
        "layerName": "shared-deps", "versionNumber": "4", "statementId": "pub",
        "action": "lambda:GetLayerVersion", "principal": "*"}
    doc["aws"]["cloudtrail"]["request_parameters"] = (
        "{layerName=shared-deps, versionNumber=4, statementId=pub, action=lambda:GetLayerVersion, principal=*}")
    return doc


# ----------------------------------------------------------------------------- the fault tally
# The fault suite counts what it did; the README's table quotes these totals.

FAULT_TALLY = {"faults injected": 0, "bad inputs tried": 0, "duplicates found": 0, "cases lost": 0}


@pytest.fixture
def tally():
    return FAULT_TALLY


def pytest_terminal_summary(terminalreporter):
    if FAULT_TALLY["faults injected"] or FAULT_TALLY["bad inputs tried"]:
        terminalreporter.write_sep("-", "fault suite")
        terminalreporter.write_line(", ".join(f"{name}: {count}" for name, count in FAULT_TALLY.items()))
