"""Benchmark: how fast `serve` answers Slack clicks while Jira is slow.

50 concurrent signed clicks on 50 distinct cases, with the Jira emulator delaying
every answer by 2 s. Prints p50/p99 of the time to the HTTP answer (Slack wants
one within 3 s; target p99 < 300 ms), then how long the worker took to apply all 50.

    python bench/ack_latency.py [--clicks 50] [--jira-delay 2]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integrations.sandbox.clicks import block_actions_payload, form_body, signed_headers  # noqa: E402
from integrations.sandbox.world import SANDBOX_SECRETS, SandboxWorld, cloudtrail_record  # noqa: E402
from integrations.state import SQLiteStateStore  # noqa: E402
from playbooks.cli import build_services  # noqa: E402
from playbooks.config import Secrets, load_config  # noqa: E402
from playbooks.detection import detection_from_record  # noqa: E402
from playbooks.layer_exposure import respond  # noqa: E402

SECRET = SANDBOX_SECRETS["SLACK_SIGNING_SECRET"]


def signed_click(case_id: str) -> tuple[str, dict]:
    body = form_body(block_actions_payload("revoke_grant", case_id, "U0APPROVER"))
    return body, signed_headers(body, SECRET)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"layerguard serve did not come up at {url}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--jira-delay", type=float, default=2.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, SandboxWorld(Path(tmp)) as world:
        config = load_config(world.write_config())
        services = build_services(config, Secrets(**{k.lower(): v for k, v in SANDBOX_SECRETS.items()}))
        world.publish_layer("shared")
        case_ids = []
        for index in range(args.clicks):
            account = f"{100000000000 + index}"
            world.grant("shared", 1, f"partner-{index}", account)
            outcome = respond(detection_from_record(cloudtrail_record("shared", 1, account, f"partner-{index}"), "bench"),
                              config, services)
            assert outcome.decision == "awaiting_approval", outcome
            case_ids.append(outcome.case_id)

        # The service runs alone in its own process, as in production; the emulators,
        # moto and the 50 clients stay in this one.
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        service = subprocess.Popen(
            [sys.executable, "-m", "playbooks.cli", "serve", "--config", str(config.source), "--port", str(port)],
            env=dict(os.environ, **world.environment(), LAYERGUARD_LOG_LEVEL="INFO"), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "serve.log", "w"))
        wait_healthy(url)
        world.jira.latency_seconds = args.jira_delay
        requests_ready = [signed_click(case_id) for case_id in case_ids]
        barrier = threading.Barrier(len(case_ids))
        latencies: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()

        def press(body: str, headers: dict) -> None:
            # Connect first, then all send at once: the figure is the service's answer
            # time, not this process's connection set-up.
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.connect()
            barrier.wait()
            start = time.perf_counter()
            connection.request("POST", "/slack/actions", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            connection.close()
            with lock:
                latencies.append(elapsed)
                statuses.append(response.status)

        started = time.perf_counter()
        threads = [threading.Thread(target=press, args=click) for click in requests_ready]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        store = SQLiteStateStore(world.state_path)
        deadline = time.time() + 600
        while time.time() < deadline and any(store.get_case(c).status != "revoked" for c in case_ids):
            time.sleep(0.2)
        applied = sum(store.get_case(c).status == "revoked" for c in case_ids)
        drained = time.perf_counter() - started
        service.terminate()
        service.wait(timeout=30)
        server_side = [float(line.rsplit(" in ", 1)[1].split()[0])
                       for line in (Path(tmp) / "serve.log").read_text().splitlines() if "click revoke_grant" in line]

    print(f"clicks: {len(latencies)} concurrent, distinct cases; Jira delay {args.jira_delay:.1f} s per answer")
    print(f"HTTP status codes: {sorted(set(statuses))}")
    print(f"ack latency p50: {statistics.median(latencies) * 1000:.1f} ms")
    print(f"ack latency p99: {percentile(latencies, 0.99) * 1000:.1f} ms  (target < 300 ms)")
    print(f"ack latency max: {max(latencies) * 1000:.1f} ms")
    if server_side:
        print(f"time inside the handler p50/p99: {statistics.median(server_side):.1f} / "
              f"{percentile(server_side, 0.99):.1f} ms")
    print(f"decisions applied (grant revoked, Slack updated, ticket closed): {applied}/{len(case_ids)} "
          f"in {drained:.1f} s with {config.service.workers} workers in the service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
