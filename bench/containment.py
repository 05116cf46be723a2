"""Benchmark: time from receiving a public-grant detection to its verified removal.

Runs the real playbook against moto's server with a fixed delay added to every AWS
call (a botocore ``before-send`` hook), and the Jira/Slack emulators. Prints the
time as a multiple of one AWS round trip, and how many AWS, Jira and Slack calls
were made before the grant was gone. Target: at most 3 round trips, 0 Jira/Slack calls.

    python bench/containment.py [--delay-ms 50] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.aws_delay import DelayedAws  # noqa: E402
from integrations.aws import AwsClients  # noqa: E402
from integrations.sandbox.world import SANDBOX_SECRETS, SandboxWorld, cloudtrail_record  # noqa: E402
from playbooks.cli import build_services  # noqa: E402
from playbooks.config import Secrets, load_config  # noqa: E402
from playbooks.detection import detection_from_record  # noqa: E402
from playbooks.layer_exposure import respond  # noqa: E402


def contained_at(calls: list[tuple[float, str]], since: float) -> tuple[float, int]:
    """When the verifying read after the last removal answered, and how many AWS calls it took."""
    ours = [(t, op) for t, op in calls if t >= since]
    last_remove = max(i for i, (_, op) in enumerate(ours) if op == "RemoveLayerVersionPermission")
    verify = next(i for i in range(last_remove + 1, len(ours)) if ours[i][1] == "GetLayerVersionPolicy")
    return ours[verify][0], verify + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    delay = args.delay_ms / 1000

    with tempfile.TemporaryDirectory() as tmp, SandboxWorld(Path(tmp)) as world:
        config = load_config(world.write_config())
        aws = DelayedAws(delay)
        services = build_services(config, Secrets(**{k.lower(): v for k, v in SANDBOX_SECRETS.items()}),
                                  aws=AwsClients(session_factory=aws.session))

        # One plain AWS round trip with the same delay, for the denominator.
        probe = services.aws.lambda_client("123456789012", "us-east-1")
        world.publish_layer("probe")
        round_trips = []
        for _ in range(10):
            start = time.perf_counter()
            probe.get_layer_version(LayerName="probe", VersionNumber=1)
            round_trips.append(time.perf_counter() - start)
        round_trip = statistics.median(round_trips)

        results = []
        for run in range(args.runs):
            layer = f"bench-layer-{run}"
            world.publish_layer(layer)
            world.grant(layer, 1, "public", "*")
            detection = detection_from_record(cloudtrail_record(layer, 1, "*", "public"), "bench")
            received = time.perf_counter()
            received_wall = time.time()
            outcome = respond(detection, config, services)
            done, aws_calls = contained_at(aws.calls, received)
            assert outcome.decision == "contained", outcome
            assert not world.policy_statements(layer, 1), "grant still present"
            contained_wall = received_wall + (done - received)
            results.append((done - received, aws_calls,
                            *(service.calls(since=received_wall) - service.calls(since=contained_wall)
                              for service in (world.jira, world.slack))))

    # The first run pays for the state file and client set-up; a running service has them warm.
    warm = results[1:] or results
    elapsed = statistics.median(r[0] for r in warm)
    print(f"AWS delay injected per call:         {args.delay_ms:.0f} ms")
    print(f"one AWS round trip (median of 10):   {round_trip * 1000:.1f} ms")
    print(f"detection -> verified removal:       {elapsed * 1000:.1f} ms median over {len(warm)} warm runs "
          f"(first run {results[0][0] * 1000:.1f} ms)")
    print(f"  as AWS round trips:                {elapsed / round_trip:.2f}  (target <= 3)")
    print(f"AWS calls before the grant was gone: {max(r[1] for r in results)}")
    print(f"Jira calls before the grant was gone:  {max(r[2] for r in results)}  (target 0)")
    print(f"Slack calls before the grant was gone: {max(r[3] for r in results)}  (target 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
