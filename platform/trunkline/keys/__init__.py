"""API keys for the gateway: create (secret shown once), list, revoke, rotate."""
