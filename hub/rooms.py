"""Room names. Clients never name rooms; the server derives them from verified claims.

Names always start with the tenant, and embed its length so that no choice of ids can make
two different (tenant, user) pairs share a room (``"a:u:b" + "c"`` vs ``"a" + "b:u:c"``).
"""

from __future__ import annotations


def tenant_room(tenant_id: str) -> str:
    return f"t{len(tenant_id)}:{tenant_id}"


def user_room(tenant_id: str, user_id: str) -> str:
    return f"{tenant_room(tenant_id)}:u:{user_id}"
