"""The catalog: accelerator flavors, models and aliases, tenant entitlements, pools, endpoints."""
