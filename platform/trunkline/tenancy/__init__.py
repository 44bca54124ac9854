"""Tenancy: tiers, tenants, members and projects, plus tenants-as-code manifests."""
