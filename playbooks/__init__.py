"""LayerGuard: respond to Lambda layer versions shared outside their account."""
