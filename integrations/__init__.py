"""Side effects live here: one thin module per external system, passed into the playbook."""
