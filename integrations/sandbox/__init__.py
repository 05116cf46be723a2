"""Local stand-ins for the hosted services, for the demo and the tests.

The Jira and Slack emulators speak the REST subsets LayerGuard uses, well enough
that the real `jira` and `slack_sdk` clients work against them unchanged. AWS is
moto's server, run in-process.
"""
