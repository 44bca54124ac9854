"""Parameter types of control-plane handlers: what the app injects, and the tenant in the path.

The app provides ``db_session`` (one transaction per request), ``principal``
(the authenticated caller), ``server_secret`` and ``session_factory``; handlers name them with these
types so every signature says where each value comes from.
"""

from __future__ import annotations

import uuid
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
TenantId: TypeAlias = FromPath[uuid.UUID]
