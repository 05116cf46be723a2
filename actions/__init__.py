"""The steps a playbook composes: contain, collect context, ticket, request approval."""
