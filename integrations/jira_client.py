"""Jira through the `jira` package: the only module that imports it.

The client is built on first use, so a Jira outage or slow login never delays
containment. Secrets come in as arguments (from the environment) and are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.retry import jira_retry, never_sent


class TicketError(RuntimeError):
    """Jira refused or could not be reached; the message names the operation.

    ``uncertain`` when Jira may have acted anyway (the answer was lost after sending).
    """

    def __init__(self, message: str, uncertain: bool = False):
        super().__init__(message)
        self.uncertain = uncertain


@dataclass(frozen=True)
class TicketFields:
    summary: str
    description: str
    labels: tuple[str, ...]
    priority: str


class JiraTickets:
    def __init__(self, url: str, project: str, issue_type: str, email: str = "", api_token: str = "",
                 timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.project = project
        self.issue_type = issue_type
        self._email = email
        self._token = api_token
        self._timeout = timeout
        self._client = None
        self.calls = 0

    def _jira(self):
        if self._client is None:
            from jira import JIRA

            auth: dict = {}
            if self._email and self._token:
                auth["basic_auth"] = (self._email, self._token)  # Jira Cloud
            elif self._token:
                auth["token_auth"] = self._token  # Server / Data Center personal access token
            self._client = self._call("connect", lambda: JIRA(
                server=self.url, timeout=self._timeout, max_retries=0, **auth))
        return self._client

    def _call(self, operation: str, fn):
        from jira.exceptions import JIRAError
        import requests

        self.calls += 1
        try:
            return jira_retry(fn)()
        except JIRAError as exc:
            raise TicketError(f"Jira {operation} failed: HTTP {exc.status_code}: {(exc.text or '')[:200]}",
                              uncertain=exc.status_code in (None, 504)) from exc
        except requests.RequestException as exc:
            raise TicketError(f"Jira {operation} failed: {type(exc).__name__}", uncertain=not never_sent(exc)) from exc

    def browse_url(self, key: str) -> str:
        return f"{self.url}/browse/{key}"

    def create(self, fields: TicketFields) -> str:
        jira = self._jira()
        payload = {
            "project": {"key": self.project},
            "issuetype": {"name": self.issue_type},
            "summary": fields.summary,
            "description": fields.description,
            "labels": list(fields.labels),
            "priority": {"name": fields.priority},
        }
        issue = self._call("create issue", lambda: jira.create_issue(fields=payload, prefetch=False))
        return issue.key

    def find_by_label(self, label: str) -> str | None:
        jira = self._jira()
        jql = f'project = "{self.project}" AND labels = "{label}" ORDER BY created ASC'
        issues = self._call("search", lambda: jira.search_issues(jql, maxResults=1, fields="summary"))
        return issues[0].key if issues else None

    def comment(self, key: str, body: str) -> None:
        jira = self._jira()
        self._call("add comment", lambda: jira.add_comment(key, body))

    def transition(self, key: str, name: str) -> bool:
        """Move the ticket through the named transition; False if the workflow has none by that name."""
        jira = self._jira()
        transitions = self._call("list transitions", lambda: jira.transitions(key))
        match = next((t for t in transitions if t["name"].lower() == name.lower()), None)
        if match is None:
            return False
        self._call("transition", lambda: jira.transition_issue(key, match["id"]))
        return True

    def link(self, key: str, earlier_key: str) -> None:
        jira = self._jira()
        self._call("link issues", lambda: jira.create_issue_link("Relates", key, earlier_key))

    def ping(self) -> None:
        jira = self._jira()
        self._call("server info", jira.server_info)
