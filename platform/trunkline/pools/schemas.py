"""Wire schemas of the catalog (msgspec, apart from the ORM)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from trunkline import models as orm
from trunkline.tenancy.schemas import Name

ModelName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$",
        description="the name engines serve the model under (vLLM --served-model-name)",
        examples=["llama-3.1-8b-instruct"],
    ),
]
Alias = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$",
        description="the public model name clients ask for",
        examples=["llama-3.1-8b"],
    ),
]
ModelKind = Literal["chat", "completion", "embedding"]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=500)]
Money = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
BlockSize = Annotated[int, msgspec.Meta(ge=1, le=1024)]


def money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.0001"))


class Flavor(msgspec.Struct):
    id: uuid.UUID
    name: str
    vendor: str
    memory_gb: int
    cost_per_hour: float

    @classmethod
    def of(cls, flavor: orm.AcceleratorFlavor) -> Flavor:
        return cls(
            flavor.id, flavor.name, flavor.vendor, flavor.memory_gb, float(flavor.cost_per_hour)
        )


class FlavorCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    vendor: Annotated[str, msgspec.Meta(max_length=64)] = ""
    memory_gb: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    cost_per_hour: Money = 0.0


class FlavorUpdate(msgspec.Struct, forbid_unknown_fields=True):
    vendor: Annotated[str, msgspec.Meta(max_length=64)] | UnsetType = UNSET
    memory_gb: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | UnsetType = UNSET
    cost_per_hour: Money | UnsetType = UNSET


class Model(msgspec.Struct):
    id: uuid.UUID
    name: str
    kind: str
    context_length: int
    params_b: float | None
    aliases: list[str]

    @classmethod
    def of(cls, model: orm.Model, aliases: list[str]) -> Model:
        return cls(
            model.id, model.name, model.kind, model.context_length, model.params_b, sorted(aliases)
        )


ContextLength = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
ParamsB = Annotated[float, msgspec.Meta(gt=0, le=100_000)]


class ModelCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: ModelName
    kind: ModelKind = "chat"
    context_length: ContextLength = 8192
    params_b: ParamsB | None = None
    aliases: list[Alias] = msgspec.field(default_factory=list)


class ModelUpdate(msgspec.Struct, forbid_unknown_fields=True):
    kind: ModelKind | UnsetType = UNSET
    context_length: ContextLength | UnsetType = UNSET
    params_b: ParamsB | UnsetType | None = UNSET


class AliasCreate(msgspec.Struct, forbid_unknown_fields=True):
    alias: Alias
    model: ModelName


class Endpoint(msgspec.Struct):
    id: uuid.UUID
    url: str
    enabled: bool


class Pool(msgspec.Struct):
    id: uuid.UUID
    name: str
    model: str
    flavor: str
    region: str
    burst: bool
    block_size: int
    endpoints: list[Endpoint]


class PoolCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    model: ModelName
    flavor: Name
    region: Name
    burst: bool = False
    block_size: BlockSize = 16


class PoolUpdate(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelName | UnsetType = UNSET
    flavor: Name | UnsetType = UNSET
    region: Name | UnsetType = UNSET
    burst: bool | UnsetType = UNSET
    block_size: BlockSize | UnsetType = UNSET


class PoolEndpoints(msgspec.Struct, forbid_unknown_fields=True):
    urls: list[Url]
    """The pool's complete endpoint list; endpoints not listed are removed."""


class Entitlement(msgspec.Struct):
    tenant_id: uuid.UUID
    alias: str
    model: str
    granted_at: datetime


class AvailableModel(msgspec.Struct):
    alias: str
    model: str
    kind: str
    context_length: int
    tenant_ids: list[uuid.UUID]
    """The caller's tenants entitled to this alias."""
