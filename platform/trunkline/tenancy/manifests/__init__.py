"""Tenants as code: YAML manifests of tiers, flavors, models, pools, cascades and tenants.

load_manifests(path) -> Manifests          parse and check, ManifestError lists every issue
apply_manifests(session_factory, path, publish=...) -> ApplyReport
manifest_json_schema_text() -> str         the text of tenants/schema.json
"""

from trunkline.tenancy.manifests.apply import (
    ApplyReport,
    Change,
    apply_manifests,
    apply_to_session,
)
from trunkline.tenancy.manifests.documents import Located, ManifestError, ManifestIssue, Manifests
from trunkline.tenancy.manifests.loader import load_manifests
from trunkline.tenancy.manifests.schemas import (
    CascadeSpec,
    FlavorSpec,
    Manifest,
    MemberSpec,
    ModelSpec,
    PoolSpec,
    ProjectSpec,
    Simulated,
    TenantSpec,
    TierSpec,
    manifest_json_schema,
    manifest_json_schema_text,
)

__all__ = [
    "ApplyReport",
    "CascadeSpec",
    "Change",
    "FlavorSpec",
    "Located",
    "Manifest",
    "ManifestError",
    "ManifestIssue",
    "Manifests",
    "MemberSpec",
    "ModelSpec",
    "PoolSpec",
    "ProjectSpec",
    "Simulated",
    "TenantSpec",
    "TierSpec",
    "apply_manifests",
    "apply_to_session",
    "load_manifests",
    "manifest_json_schema",
    "manifest_json_schema_text",
]
