"""Moving held events (parked retries, dead letters) back onto the queue, atomically.

The events leave their holder in the same Lua call that pushes their messages, so there is no
moment at which a crash can lose them or publish them twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from producer import contract

# KEYS[1]: holder sorted set   KEYS[2]: holder hash of payloads   KEYS[3]: the queue
# ARGV[1]: n, ARGV[2..n+1]: event ids, ARGV[n+2..]: task messages carrying those events
# Pushes the messages and removes the ids, but only if every id is still in the holder: if
# another process took any of them meanwhile, nothing happens and 0 is returned.
REQUEUE_IF_HELD = """
local n = tonumber(ARGV[1])
for i = 2, n + 1 do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then return 0 end
end
for i = 2, n + 1 do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
for i = n + 2, #ARGV do
  redis.call('LPUSH', KEYS[3], ARGV[i])
end
return 1
"""


class Requeuer:
    """Runs :data:`REQUEUE_IF_HELD` for one holder (a sorted set plus a hash)."""

    def __init__(self, client: redis.Redis, holder: str, payloads: str) -> None:
        self._script = client.register_script(REQUEUE_IF_HELD)
        self._keys = [holder, payloads, contract.QUEUE]

    def __call__(self, ids: Sequence[str | bytes], messages: Sequence[str]) -> bool:
        """True if the messages were pushed and the ids removed from the holder."""
        return bool(self._script(keys=self._keys, args=[len(ids), *ids, *messages]))
