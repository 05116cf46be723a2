"""Benchmark: finding the functions that use a layer, at 10,000 functions.

10,000 functions in one account on moto's server, a fixed delay (50 ms) added to every
AWS call. Prints:
- the wall time of one detection's consumer discovery against the lower bound
  (ListFunctions pages x the delay; target within 1.15x), and against a bare
  ListFunctions paging loop over the same server (what moto and botocore cost per page);
- the total discovery time for a burst of 50 detections on layers of that account,
  against the single-detection time (target within 1.5x: the inventory is reused);
- a whole investigation of one detection, CloudTrail lookups included (six event names
  at 2 calls a second, answered by a Stubber behind the same delay, since moto has no
  LookupEvents), against consumer discovery alone: the lookups run during the scan.

    python bench/consumers.py [--functions 10000] [--delay-ms 50] [--burst 50]
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.stub import Stubber  # noqa: E402

from actions.collect_context import InvestigationSettings, Investigator  # noqa: E402
from actions.related_activity import RELATED_EVENT_NAMES  # noqa: E402
from bench.aws_delay import DelayedAws  # noqa: E402
from integrations.aws import AwsClients, iter_function_configurations  # noqa: E402
from integrations.sandbox.world import ACCOUNT_ID, REGION, SandboxWorld, cloudtrail_record  # noqa: E402
from playbooks.detection import detection_from_record  # noqa: E402

DISCOVERY_ONLY = InvestigationSettings(lookup_activity=False, scan_secrets=False)
WITH_ACTIVITY = InvestigationSettings(lookup_activity=True, scan_secrets=False)


@dataclass
class StubbedCloudTrail(AwsClients):
    """AwsClients whose CloudTrail answers every LookupEvents with no events, after the delay."""

    delay: float = 0.0

    def client(self, service: str, account_id: str, region: str):
        client = super().client(service, account_id, region)
        if service == "cloudtrail" and not hasattr(client, "bench_stub"):
            # A Stubber answers before anything is sent: the delay goes first, on before-call.
            client.meta.events.register("before-call.cloudtrail.LookupEvents", lambda **_: time.sleep(self.delay))
            client.bench_stub = Stubber(client)
            for _ in RELATED_EVENT_NAMES:
                client.bench_stub.add_response("lookup_events", {"Events": []})
            client.bench_stub.activate()
        return client


def build_account(world: SandboxWorld, functions: int, layers: int) -> list[str]:
    """Layers and functions straight into moto's backend: creating 10,000 over HTTP takes minutes."""
    from moto.awslambda.models import lambda_backends

    layer_arns = [world.publish_layer(f"shared-{i}")["LayerVersionArn"] for i in range(layers)]
    role = world.client("iam").create_role(RoleName="bench", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("h.py", "def h(e, c):\n    return 1\n")
    backend = lambda_backends[ACCOUNT_ID][REGION]
    code = base64.b64encode(archive.getvalue()).decode()  # as the API carries it
    for index in range(functions):
        backend.create_function({
            "FunctionName": f"fn-{index:05d}", "Runtime": "python3.11", "Role": role, "Handler": "h.h",
            "Code": {"ZipFile": code},
            "Layers": [layer_arns[index % layers]] if index % 20 == 0 else []})
    return [arn.rsplit(":", 1)[0] for arn in layer_arns]


def detection(layer_arn: str):
    return detection_from_record(cloudtrail_record(layer_arn, 1, "*", "pub"), "bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    delay = args.delay_ms / 1000

    with tempfile.TemporaryDirectory() as tmp, SandboxWorld(Path(tmp)) as world:
        layers = build_account(world, args.functions, args.burst)
        pages = math.ceil(args.functions / 50)
        lower_bound = pages * delay

        # A bare paging loop over the same server: what moto and botocore cost per page.
        bare_aws = DelayedAws(delay)
        started = time.perf_counter()
        count = sum(1 for _ in iter_function_configurations(
            AwsClients(session_factory=bare_aws.session).lambda_client(ACCOUNT_ID, REGION)))
        bare = time.perf_counter() - started
        assert count == args.functions

        # One detection, cold inventory.
        aws = DelayedAws(delay)
        investigator = Investigator(AwsClients(session_factory=aws.session), DISCOVERY_ONLY)
        started = time.perf_counter()
        context = investigator.collect(detection(layers[0]))
        single = time.perf_counter() - started
        single_pages = aws.count("ListFunctions")
        assert not context.errors, context.errors

        # A burst of detections on layers of the same account, four at a time as `serve` runs them.
        aws = DelayedAws(delay)
        investigator = Investigator(AwsClients(session_factory=aws.session), DISCOVERY_ONLY)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            contexts = list(pool.map(investigator.collect, [detection(arn) for arn in layers]))
        burst = time.perf_counter() - started
        burst_pages = aws.count("ListFunctions")
        found = sum(len(c.consumers) for c in contexts)

        # One detection, whole investigation: the consumer scan and the CloudTrail lookups.
        aws = DelayedAws(delay)
        investigator = Investigator(StubbedCloudTrail(session_factory=aws.session, delay=delay), WITH_ACTIVITY)
        started = time.perf_counter()
        context = investigator.collect(detection(layers[1]))
        whole = time.perf_counter() - started
        assert not context.errors, context.errors

    print(f"functions: {args.functions} in one account; AWS delay {args.delay_ms:.0f} ms per call")
    print(f"ListFunctions pages for one detection: {single_pages} (lower bound {pages}); "
          f"other AWS calls: GetLayerVersion, GetLayerVersionPolicy, ListLayerVersions, ListAliases per consumer")
    print(f"one detection, consumer discovery: {single:.2f} s = {single / lower_bound:.2f}x the lower bound "
          f"({lower_bound:.1f} s = pages x delay; target <= 1.15x)")
    print(f"  a bare ListFunctions paging loop on the same server: {bare:.2f} s = {bare / lower_bound:.2f}x; "
          f"LayerGuard over the bare loop: {single / bare:.2f}x")
    print(f"burst of {len(layers)} detections: {burst:.2f} s = {burst / single:.2f}x one detection "
          f"(target <= 1.5x); ListFunctions pages: {burst_pages}; consumers found: {found}")
    print(f"one detection, whole investigation with {len(RELATED_EVENT_NAMES)} CloudTrail lookups at 2/s: "
          f"{whole:.2f} s = {whole / single:.2f}x consumer discovery alone (the lookups run during the scan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
