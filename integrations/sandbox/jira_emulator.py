"""An emulator of the Jira Server REST API v2 subset LayerGuard uses.

Endpoints: serverInfo, myself, field, issue create/get, comments, transitions,
search (JQL: ``project = X``, ``labels = "y"``, joined by AND) and issueLink.
It validates what real Jira validates for these calls (required fields, known
project, issue type and priority, labels without spaces) and keeps everything in memory.
"""

from __future__ import annotations

import base64
import hmac
import itertools
import re
import threading
from datetime import datetime, timezone

from integrations.http_server import Reply, Request
from integrations.sandbox.http_emulator import HttpEmulator

API = "/rest/api/2"
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
TRANSITIONS = ({"id": "11", "name": "To Do"}, {"id": "21", "name": "In Progress"}, {"id": "31", "name": "Done"})


class JiraEmulator(HttpEmulator):
    name = "jira-emulator"

    def __init__(self, projects=("SEC",), issue_types=("Task", "Bug"), email: str = "", token: str = "",
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.projects = set(projects)
        self.issue_types = set(issue_types)
        self._email, self._token = email, token
        self.issues: dict[str, dict] = {}
        self.links: list[dict] = []
        self._ids = itertools.count(10000)
        self._keys = {p: itertools.count(1) for p in self.projects}
        self._issues_lock = threading.Lock()
        self.route("GET", f"{API}/serverInfo", self._server_info)
        self.route("GET", f"{API}/myself", lambda r: Reply(200, {"name": self._email or "layerguard", "active": True}))
        self.route("GET", f"{API}/field", self._fields)
        self.route("POST", f"{API}/issue", self._create)
        self.route("GET", f"{API}/issue/(?P<key>[^/]+)", self._get)
        self.route("GET", f"{API}/issue/(?P<key>[^/]+)/comment", self._comments)
        self.route("POST", f"{API}/issue/(?P<key>[^/]+)/comment", self._add_comment)
        self.route("GET", f"{API}/issue/(?P<key>[^/]+)/transitions", self._transitions)
        self.route("POST", f"{API}/issue/(?P<key>[^/]+)/transitions", self._transition)
        self.route("GET", f"{API}/search", self._search)
        self.route("POST", f"{API}/issueLink", self._link)
        self.route("GET", f"{API}/issueLinkType", lambda r: Reply(200, {"issueLinkTypes": [
            {"id": "10000", "name": "Relates", "inward": "relates to", "outward": "relates to"},
            {"id": "10001", "name": "Duplicate", "inward": "is duplicated by", "outward": "duplicates"}]}))

    # -- auth: Basic (Cloud: email + API token) or Bearer (Server/DC personal access token)

    def authorised(self, request: Request) -> bool:
        if not self._token:
            return True
        header = request.headers.get("authorization", "")
        if self._email:
            expected = "Basic " + base64.b64encode(f"{self._email}:{self._token}".encode()).decode()
        else:
            expected = f"Bearer {self._token}"
        return hmac.compare_digest(header.encode(), expected.encode())

    def error_body(self, status: int, message: str):
        return {"errorMessages": [message], "errors": {}}

    # -- helpers

    def _not_found(self, key: str) -> Reply:
        return Reply(404, self.error_body(404, f"Issue Does Not Exist: {key}"))

    @staticmethod
    def _now() -> str:
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")

    def _public(self, issue: dict) -> dict:
        return {key: value for key, value in issue.items() if not key.startswith("_")}

    # -- routes

    def _server_info(self, request: Request) -> Reply:
        return Reply(200, {"baseUrl": self.url, "version": "9.12.0", "versionNumbers": [9, 12, 0],
                           "deploymentType": "Server", "buildNumber": 912000,
                           "serverTitle": "LayerGuard Jira emulator"})

    def _fields(self, request: Request) -> Reply:
        names = ("summary", "description", "labels", "priority", "status", "comment", "issuetype", "project", "created")
        return Reply(200, [{"id": n, "key": n, "name": n.title(), "custom": False, "clauseNames": [n]} for n in names])

    def _create(self, request: Request) -> Reply:
        fields = request.json().get("fields")
        errors: dict[str, str] = {}
        if not isinstance(fields, dict):
            return Reply(400, {"errorMessages": ["fields is required"], "errors": {}})
        project = (fields.get("project") or {}).get("key")
        if project not in self.projects:
            errors["project"] = "valid project is required"
        issue_type = (fields.get("issuetype") or {}).get("name")
        if issue_type not in self.issue_types:
            errors["issuetype"] = "valid issue type is required"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255 or "\n" in summary:
            errors["summary"] = "Summary must be less than 255 characters and on one line."
        labels = fields.get("labels", [])
        if not isinstance(labels, list) or any(not isinstance(l, str) or not l or " " in l for l in labels):
            errors["labels"] = "Labels cannot contain spaces."
        priority = fields.get("priority")
        if priority is not None and (priority or {}).get("name") not in PRIORITIES:
            errors["priority"] = "Priority name is not valid."
        if errors:
            return Reply(400, {"errorMessages": [], "errors": errors})
        with self._issues_lock:
            issue_id = str(next(self._ids))
            key = f"{project}-{next(self._keys[project])}"
            self.issues[key] = {
                "id": issue_id, "key": key, "self": f"{self.url}{API}/issue/{issue_id}",
                "fields": {
                    "summary": summary, "description": fields.get("description", ""),
                    "labels": list(labels), "priority": {"name": (priority or {}).get("name", "Medium")},
                    "issuetype": {"name": issue_type}, "project": {"key": project},
                    "status": {"name": "To Do"}, "created": self._now(),
                    "comment": {"comments": [], "total": 0, "maxResults": 0, "startAt": 0},
                    "issuelinks": [],
                },
            }
        return Reply(201, {"id": issue_id, "key": key, "self": f"{self.url}{API}/issue/{issue_id}"})

    def _get(self, request: Request) -> Reply:
        key = request.params["key"]
        issue = self.issues.get(key) or next((i for i in self.issues.values() if i["id"] == key), None)
        return Reply(200, self._public(issue)) if issue else self._not_found(key)

    def _comments(self, request: Request) -> Reply:
        issue = self.issues.get(request.params["key"])
        if not issue:
            return self._not_found(request.params["key"])
        return Reply(200, issue["fields"]["comment"])

    def _add_comment(self, request: Request) -> Reply:
        issue = self.issues.get(request.params["key"])
        if not issue:
            return self._not_found(request.params["key"])
        body = request.json().get("body")
        if not isinstance(body, str) or not body.strip():
            return Reply(400, {"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}})
        return Reply(201, self._append_comment(issue, body))

    def _append_comment(self, issue: dict, body: str) -> dict:
        with self._issues_lock:
            comments = issue["fields"]["comment"]
            comment = {"id": str(next(self._ids)), "body": body, "created": self._now(),
                       "author": {"name": self._email or "layerguard"}}
            comments["comments"].append(comment)
            comments["total"] = comments["maxResults"] = len(comments["comments"])
        return comment

    def _transitions(self, request: Request) -> Reply:
        if request.params["key"] not in self.issues:
            return self._not_found(request.params["key"])
        return Reply(200, {"transitions": [dict(t, to={"name": t["name"]}) for t in TRANSITIONS]})

    def _transition(self, request: Request) -> Reply:
        issue = self.issues.get(request.params["key"])
        if not issue:
            return self._not_found(request.params["key"])
        body = request.json()
        wanted = str((body.get("transition") or {}).get("id"))
        transition = next((t for t in TRANSITIONS if t["id"] == wanted), None)
        if transition is None:
            return Reply(400, {"errorMessages": [f"Transition id '{wanted}' is not valid for this issue."], "errors": {}})
        with self._issues_lock:
            issue["fields"]["status"] = {"name": transition["name"]}
            resolution = (body.get("fields") or {}).get("resolution")
            if resolution:
                issue["fields"]["resolution"] = resolution
        for update in (body.get("update") or {}).get("comment", []):
            self._append_comment(issue, update["add"]["body"])
        return Reply(204)

    _CLAUSE = re.compile(r'^\s*(project|labels|key)\s*=\s*"?([^"]*?)"?\s*$', re.IGNORECASE)

    def _search(self, request: Request) -> Reply:
        jql = request.query.get("jql", [""])[0]
        jql = re.split(r"\s+ORDER\s+BY\s+", jql, flags=re.IGNORECASE)[0]
        clauses = []
        for part in filter(None, re.split(r"\s+AND\s+", jql, flags=re.IGNORECASE)):
            match = self._CLAUSE.match(part)
            if not match:
                return Reply(400, {"errorMessages": [f"Unsupported JQL in emulator: {part!r}"], "errors": {}})
            clauses.append((match.group(1).lower(), match.group(2)))

        def matches(issue: dict) -> bool:
            fields = issue["fields"]
            return all(
                (name == "project" and fields["project"]["key"] == value)
                or (name == "labels" and value in fields["labels"])
                or (name == "key" and issue["key"] == value)
                for name, value in clauses)

        found = [self._public(i) for i in self.issues.values() if matches(i)]
        start = int(request.query.get("startAt", ["0"])[0])
        limit = int(request.query.get("maxResults", ["50"])[0])
        return Reply(200, {"startAt": start, "maxResults": limit, "total": len(found),
                           "issues": found[start:start + limit]})

    def _link(self, request: Request) -> Reply:
        body = request.json()
        inward, outward = (body.get("inwardIssue") or {}).get("key"), (body.get("outwardIssue") or {}).get("key")
        if inward not in self.issues or outward not in self.issues:
            return Reply(404, self.error_body(404, "Issue Does Not Exist"))
        link = {"type": body.get("type", {}), "inward": inward, "outward": outward}
        with self._issues_lock:
            self.links.append(link)
            self.issues[inward]["fields"]["issuelinks"].append({"type": link["type"], "outwardIssue": {"key": outward}})
            self.issues[outward]["fields"]["issuelinks"].append({"type": link["type"], "inwardIssue": {"key": inward}})
        return Reply(201)
