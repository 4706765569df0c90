"""Two ``serve`` processes, four devices of one user acting at once: after every step the
unread and unseen counts (on both nodes, and the stored counters) equal a model's, and
every connection on either node received every change."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass

import asyncpg
import orjson

from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import RecordingClient, ServeStarter, SettingsFactory, SioConnect
from tests.harness.services import _asyncpg_dsn
from tests.harness.tokens import hs256_token

N = "/api/notifications"
DEVICES = 4
ROUNDS = 8
ACTIONS = ("mark-as-seen", "mark-as-read", "mark-as-unread", "archive", "unarchive", "delete")


@dataclass
class Item:
    read: bool = False
    seen: bool = False
    archived: bool = False


class Model:
    """What the inbox must look like: the actions applied to plain objects."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def apply(self, action: str, ids: list[str]) -> int:
        """Apply ``action``; how many items it changes (what the hub must answer)."""
        changed = 0
        for i in ids:
            item = self.items.get(i)
            if item is None:
                continue
            before = (item.read, item.seen, item.archived)
            if action == "delete":
                del self.items[i]
                changed += 1
                continue
            if action == "mark-as-seen":
                item.seen = True
            elif action == "mark-as-read":
                item.read = item.seen = True
            elif action == "mark-as-unread":
                item.read = False
            else:
                item.archived = action == "archive"
            if action == "mark-as-read":
                changed += before[0] is False
            else:
                changed += (item.read, item.seen, item.archived) != before
        return changed

    def counts(self) -> tuple[int, int]:
        live = [item for item in self.items.values() if not item.archived]
        return sum(not i.read for i in live), sum(not i.seen for i in live)


async def act(device: ApiClient, action: str, ids: list[str]) -> int:
    if action == "delete":
        updated = 0
        for notification_id in ids:
            status, body = await device.request("DELETE", f"{N}/{notification_id}/")
            assert status == 200, body
            updated += body["updated"]
        return updated
    status, body = await device.post(f"{N}/{action}/", {"ids": ids})
    assert status == 200, body
    return int(body["updated"])


async def stored_counter(dsn: str, tenant: str, user: str) -> tuple[int, int]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT unread_count, unseen_count FROM notification_counters"
            " WHERE tenant_id = $1 AND user_id = $2",
            tenant,
            user,
        )
    finally:
        await connection.close()
    return (int(row["unread_count"]), int(row["unseen_count"])) if row else (0, 0)


async def settled(sockets: list[RecordingClient]) -> list[list[str]]:
    """Each socket's ``notification:updated`` events, once all have the same number and it
    stopped growing."""
    last = -1
    for _ in range(100):
        sizes = {len(s.received("notification:updated")) for s in sockets}
        if len(sizes) == 1 and sizes == {last}:
            break
        last = max(sizes)
        await asyncio.sleep(0.1)
    return [
        sorted(orjson.dumps(e).decode() for e in s.received("notification:updated"))
        for s in sockets
    ]


async def test_mixed_operations_from_devices_on_two_nodes_keep_counts_exact(
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
    sio_connect: SioConnect,
    postgres_url: str,
) -> None:
    nodes = [
        running.url
        for running in await asyncio.gather(
            serve_process(hub_settings()), serve_process(hub_settings())
        )
    ]
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    rng = random.Random(14)
    devices = [ApiClient.for_user(nodes[d % 2], tenant, "alice") for d in range(DEVICES)]
    services = [ApiClient.for_service(url, tenant) for url in nodes]
    token = hs256_token(tenant=tenant, user="alice")
    sockets = [
        await sio_connect(nodes[d % 2], NOTIFICATIONS_NAMESPACE, token=token)
        for d in range(DEVICES)
    ]
    (bystander_id,) = await services[0].notify(["bob"], title="bob's")
    model = Model()

    async def create(count: int) -> None:
        for i in range(count):
            (new_id,) = await services[i % 2].notify(["alice"], title=f"n{i}")
            model.items[new_id] = Item()

    await create(40)
    dsn = _asyncpg_dsn(postgres_url)
    for step in range(ROUNDS):
        ids = list(model.items)
        rng.shuffle(ids)
        work = []
        if step % 3 == 2:
            # Contended: every device acts on the same items at once, in actions whose end
            # state does not depend on their order; each row still changes once.
            same = ids[:10]
            for device, action in zip(
                devices, ("mark-as-read", "mark-as-read", "archive", "mark-as-seen"), strict=True
            ):
                work.append(act(device, action, same))
            unread_before = model.apply("mark-as-read", same)
            for action in ("archive", "mark-as-seen"):
                model.apply(action, same)
            results = await asyncio.gather(*work)
            # Both read marks together changed each unread row once.
            assert results[0] + results[1] == unread_before, step
        else:
            # Each device on items of its own, while new ones arrive on both nodes.
            expected = []
            for d, device in enumerate(devices):
                part = ids[d::DEVICES][: rng.randint(1, 8)]
                action = rng.choice(ACTIONS)
                work.append(act(device, action, part))
                expected.append(model.apply(action, part))
            results = await asyncio.gather(create(6), *work)
            assert list(results[1:]) == expected, step
        want = model.counts()
        for device in devices[:2]:  # one on each node
            status, body = await device.get(f"{N}/unread-count/")
            assert (body["unread_count"], body["unseen_count"]) == want, step
        assert await stored_counter(dsn, tenant, "alice") == want, step
        status, page = await devices[0].get(f"{N}/", limit="100")
        listed = {item["id"] for item in page["items"]}
        assert listed == {i for i, item in model.items.items() if not item.archived}, step
        status, page = await devices[1].get(f"{N}/", limit="100", archived="true")
        assert status == 200, page
        assert {item["id"] for item in page["items"]} == {
            i for i, item in model.items.items() if item.archived
        }, step

    # Every connection, on either node, got every change.
    received = await settled(sockets)
    assert received[0] and all(events == received[0] for events in received)
    bob = ApiClient.for_user(nodes[1], tenant, "bob")
    _, page = await bob.get(f"{N}/")
    assert [(item["id"], item["read_at"], item["archived_at"]) for item in page["items"]] == [
        (bystander_id, None, None)
    ]
