"""A count of the committed changes to what gateways must know (one row)."""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.models.base import Base

CONFIG_ROW = 1


class ConfigGeneration(Base):
    """Bumped in the transaction of every change marked ``mark_config_changed``, by whichever
    process commits it (API, CLI, manifests): the control plane's periodic check rebuilds the
    snapshot only when it moved, instead of every few seconds (a second of CPU at 40,000 keys)."""

    __tablename__ = "config_generation"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
