"""Usage metering: events emitted by the gateway, streamed, ingested into the ledger."""
