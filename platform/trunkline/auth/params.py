"""Parameter types of control-plane handlers: what the app injects, and the tenant in the path.

The app provides ``db_session`` (one transaction per request), ``principal``
(the authenticated caller), ``server_secret``, ``session_factory``, ``config_writes`` and
``max_live_keys``; handlers
name them with these types so every signature says where each value comes from.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeAlias

from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.orm import Session, sessionmaker

from trunkline.auth.principal import Principal

DbSession: TypeAlias = NamedDependency[Session]
Caller: TypeAlias = NamedDependency[Principal]
ServerSecret: TypeAlias = NamedDependency[bytes]
SessionFactory: TypeAlias = NamedDependency[sessionmaker[Session]]
"""Sessions of a handler's own, for a response made after its request's session closed."""
ConfigWrites: TypeAlias = NamedDependency[Callable[[], AbstractContextManager[Session]]]
"""A transaction of a handler's own that may change the configuration, published after its
commit (``tenancy.changes.unit_of_work``): for a handler with work to do after the commit,
which takes no ``db_session`` (a write's holds the configuration's lock until the response)."""
MaxLiveKeys: TypeAlias = NamedDependency[int]
"""How many live keys a tenant may have through the API
(``TRUNKLINE_CONTROLPLANE__MAX_LIVE_KEYS_PER_TENANT``)."""
TenantId: TypeAlias = FromPath[uuid.UUID]
