"""The direct lane for script calls (nbqueue.direct): when it is taken, and that it keeps
redis-py's guarantees (NOSCRIPT recovery, reconnects, error replies, fork safety)."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis
import redis.asyncio as aredis

from nbqueue import Queue, aio, connect, direct
from nbqueue.connection import Connection
from nbqueue.errors import RedisUnavailableError


def test_lane_only_for_plain_pooled_clients(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url, decode_responses=True)
    single = redis.Redis.from_url(redis_url, decode_responses=True,
                                  single_connection_client=True)
    assert isinstance(direct.lane(plain), direct.Lane)
    assert direct.lane(plain) is direct.lane(plain)  # one per client
    assert direct.lane(single) is None  # its one connection is guarded by a lock
    assert isinstance(direct.lane(aredis.Redis.from_url(redis_url)), direct.Lane)
    single.close()
    plain.close()


def test_lane_survives_script_flush_and_killed_connections(conn: Connection,
                                                           r: redis.Redis) -> None:
    q = Queue("lane", conn)
    assert q.add({"type": "a"}).id == "1"
    r.script_flush()  # as after a Redis restart: the next EVALSHA says NOSCRIPT
    assert q.add({"type": "b"}).id == "2"
    r.client_kill_filter(_type="normal", skipme=True)  # the lane's pooled socket dies
    assert q.add({"type": "c"}).id == "3"
    assert q.get_metrics().waiting == 3


def test_lane_async_survives_script_flush_and_killed_connections(redis_url: str,
                                                                 r: redis.Redis) -> None:
    async def main() -> list[str]:
        q = aio.Queue("lane", connect(redis_url))
        ids = [(await q.add({"type": "a"})).id]
        r.script_flush()
        ids.append((await q.add({"type": "b"})).id)
        r.client_kill_filter(_type="normal", skipme=True)
        ids.append((await q.add_bulk([{"type": "c"}, {"type": "d"}]))[1].id)
        await q.close()
        return ids

    assert asyncio.run(main()) == ["1", "2", "4"]


def test_lane_error_reply_raises_and_keeps_the_connection_usable(conn: Connection,
                                                                 r: redis.Redis) -> None:
    q = Queue("lane", conn)
    q.add({"type": "a"})
    r.delete("nbq:{lane}:wait")
    r.set("nbq:{lane}:wait", "not a zset")  # the add script's ZADD now fails in Redis
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        q.add({"type": "b"})
    r.delete("nbq:{lane}:wait")
    # same pooled connection, replies in step (the refused add wrote nothing, not even the
    # id counter: add.lua validates before its first write)
    assert q.add({"type": "c"}).id == "2"


def test_lane_reports_redis_down() -> None:
    q = Queue("lane", Connection("redis://127.0.0.1:1/0"))  # nothing listens there
    with pytest.raises(RedisUnavailableError, match=r"127\.0\.0\.1:1\b"):
        q.add({"type": "a"})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_share_the_parents_socket(conn: Connection) -> None:
    q = Queue("lane", conn)
    q.add({"type": "parent"})  # the lane now holds an idle connection
    lane = direct.lane(conn.sync())
    assert lane is not None
    parent_id = direct.call_sync(lane, [("CLIENT", "ID")])[0]
    pid = os.fork()
    if pid == 0:  # child: must open its own connection, not write on the parent's
        code = 1
        try:
            child_id = direct.call_sync(lane, [("CLIENT", "ID")])[0]
            ok = child_id != parent_id and q.add({"type": "child"}).id == "2"
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's connection is still its own and in step with its replies
    assert direct.call_sync(lane, [("CLIENT", "ID")])[0] == parent_id
    assert q.add({"type": "parent"}).id == "3"
    assert [j.name for j in q.get_jobs(["waiting"])] == ["parent", "child", "parent"]
