"""Parameter types of control-plane handlers: what the app injects, and the tenant in the path.

The app provides ``db_session`` (one transaction per request), ``principal``
(the authenticated caller) and ``server_secret``; handlers name them with these
types so every signature says where each value comes from.
"""

from __future__ import annotations

import uuid
from typing import TypeAlias

from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.orm import Session

from trunkline.auth.principal import Principal

DbSession: TypeAlias = NamedDependency[Session]
Caller: TypeAlias = NamedDependency[Principal]
ServerSecret: TypeAlias = NamedDependency[bytes]
TenantId: TypeAlias = FromPath[uuid.UUID]
