"""moto's server, in-process, for the demo and the end-to-end tests.

moto (5.x) deviations from AWS that matter to LayerGuard are corrected here, so the
code under test runs as it does against AWS:
- ``RemoveLayerVersionPermission`` passes the RevisionId query parameter as a list,
  so every guarded removal fails with PreconditionFailed, even a correct one;
- removing a statement does not move the policy's revision id;
- ``ListFunctions`` ignores ``MaxItems``/``Marker`` and returns every function at once,
  where AWS pages by 50 (which is what makes consumer discovery slow at scale);
- ``ListLayerVersions`` finds nothing when the layer is named by its ARN, as AWS allows.

And one cost AWS does not have: moto's server lists its own package directory (some
180 ``stat`` calls) on every request to find the service; the listing is kept instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from urllib.parse import unquote

_FIXED = False


def apply_moto_fixes() -> None:
    global _FIXED
    if _FIXED:
        return
    from moto import backends
    from moto.awslambda import policy as moto_policy
    from moto.awslambda.models import LambdaBackend
    from moto.awslambda.responses import LambdaResponse
    from moto.moto_api._internal import mock_random

    def remove_layer_version_permission(self):
        layer_name = self._get_param("LayerName")
        version_number = self._get_param("VersionNumber")
        statement_id = self.path.split("/")[-1].split("?")[0]
        revision = (self.querystring.get("RevisionId") or [""])[0]
        self.backend.get_layer_version(layer_name, version_number)
        self.backend.remove_layer_version_permission(layer_name, version_number, statement_id, revision)
        return 204, {"status": 204}, "{}"

    original_del = moto_policy.Policy.del_statement

    def del_statement(self, sid, revision=""):
        original_del(self, sid, revision)
        self.revision = str(mock_random.uuid4())

    def list_functions(self):
        # moto deep-copies every function (code included) on each call, and ignores paging.
        # Page first and copy nothing; the marker is "<function index>.<entry index>" so a
        # page costs its own 50 entries, not a walk over every function before it.
        all_versions = self.querystring.get("FunctionVersion", [None])[0] == "ALL"
        limit = min(int(self.querystring.get("MaxItems", ["50"])[0]), 50)
        group_index, entry_index = (int(part) for part in
                                    (self.querystring.get("Marker", [""])[0] or "0.0").split("."))
        groups = list(self.backend._lambdas._functions.values())
        configurations = []
        next_marker = None
        for group_index in range(group_index, len(groups)):
            group = groups[group_index]
            # $LATEST first, then the published versions when all versions are asked for.
            entries = [None, *group["versions"]] if all_versions else [None]
            for entry_index in range(entry_index, len(entries)):
                if len(configurations) == limit:
                    next_marker = f"{group_index}.{entry_index}"
                    break
                version = entries[entry_index]
                configuration = (version or group["latest"]).get_configuration()
                if version is None and all_versions:
                    configuration["FunctionArn"] += ":$LATEST"
                configurations.append(configuration)
            if next_marker:
                break
            entry_index = 0
        result = {"Functions": configurations}
        if next_marker:
            result["NextMarker"] = next_marker
        return json.dumps(result)

    original_list_layer_versions = LambdaBackend.list_layer_versions

    def list_layer_versions(self, layer_name):
        name = unquote(layer_name)
        return original_list_layer_versions(self, name.split(":layer:", 1)[1] if ":layer:" in name else name)

    moto_modules = tuple(backends.list_of_moto_modules())  # the installed package does not change

    LambdaBackend.list_layer_versions = list_layer_versions
    backends.list_of_moto_modules = lambda: moto_modules
    LambdaResponse.remove_layer_version_permission = remove_layer_version_permission
    LambdaResponse.list_functions = list_functions
    moto_policy.Policy.del_statement = del_statement
    _FIXED = True


class MotoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from moto.server import ThreadedMotoServer

        apply_moto_fixes()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.url = ""

    def start(self) -> "MotoServer":
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every resource (moto's backends are per process, not per server)."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).read()

    def __enter__(self):
        return self.start()

    def __exit__(self, *_):
        self.stop()


FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the duration, restoring the old values after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def aws_environment(endpoint_url: str):
    """Point boto3's default chain at moto for the duration."""
    return environment(dict(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=endpoint_url))
