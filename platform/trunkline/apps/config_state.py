"""What says whether the gateways' configuration may have changed since a snapshot was built."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.pricebook_store import prices_in_force_since
from trunkline.kit.ids import utcnow
from trunkline.snapshot.store import BuiltFrom
from trunkline.tenancy.changes import config_generation


@dataclass(frozen=True)
class ConfigState:
    """What says whether the gateways' configuration may have changed: the count of committed
    changes, and when the price book version in force took effect (prices change at such
    instants without a commit)."""

    generation: int | None
    prices_since: datetime | None

    def as_built_from(self, *, alone: bool = False) -> BuiltFrom | None:
        """As the snapshot store records it beside a version built after it was read (None:
        nothing can be told from it); ``alone``: see ``BuiltFrom``."""
        if self.generation is None:
            return None
        prices = "" if self.prices_since is None else self.prices_since.isoformat()
        return BuiltFrom(self.generation, prices, alone=alone)


def config_state(session: Session) -> ConfigState:
    return ConfigState(config_generation(session), prices_in_force_since(session, utcnow()))


def read_config_state(factory: sessionmaker[Session]) -> ConfigState:
    """``config_state`` in a session of its own."""
    with factory() as session:
        return config_state(session)
