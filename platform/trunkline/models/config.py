"""A count of the committed changes to what gateways must know (one row), and what each recent
change was."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, String
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


class ConfigChange(Base):
    """What the change that set ``generation`` was, written in its transaction: whether it
    changed keys only, which the process that committed it publishes by their shards. Another
    control plane may then patch its own key changes over it
    (``ChangePublisher._may_patch``) instead of building the whole snapshot. Only the last
    ``tenancy.changes.CHANGES_KEPT`` are kept; a generation without a row (older, or committed
    by a control plane before this table) is not known to be keys only."""

    __tablename__ = "config_changes"

    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    keys_only: Mapped[bool] = mapped_column(Boolean)
    shards: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The key shards a keys-only change changed (``kit.shards``), space-separated: a process
    that finds it missing from the store patches them in (``apps.publishing``)."""
