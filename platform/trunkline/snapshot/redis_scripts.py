"""The Lua scripts of the Redis snapshot store (``snapshot.redis_store``), each with the names
of its keys and arguments: the store passes them by name (``Script.call_args``), and the
script reads them by the same names, so a position cannot drift between the two."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trunkline.snapshot.store import AHEAD_CAP

Arg = bytes | str | int | float
"""What a script is passed (redis-py sends each as its bytes)."""


@dataclass(frozen=True)
class Script:
    """A script's body, reading ``KEYS`` and ``ARGV`` as locals named ``keys`` and ``args``;
    ``rest`` names what follows the named arguments (read from ``ARGV[FIRST_REST]`` on)."""

    keys: tuple[str, ...]
    args: tuple[str, ...]
    body: str

    @property
    def lua(self) -> str:
        lines = [_locals(self.keys, "KEYS"), _locals(self.args, "ARGV")]
        lines.append(f"local FIRST_REST = {len(self.args) + 1}")
        return "\n".join(line for line in lines if line) + "\n" + self.body

    def call_args(
        self, keys: Mapping[str, str], args: Mapping[str, Arg], rest: Sequence[Arg] = ()
    ) -> tuple[list[str], list[Arg]]:
        """``keys`` and ``args`` in the script's order, ``rest`` after: a name it has and they
        lack (or the reverse) raises here, not as a script reading the wrong argument."""
        if keys.keys() != set(self.keys) or args.keys() != set(self.args):
            raise ValueError(f"script wants keys {self.keys} and args {self.args}")
        return [keys[k] for k in self.keys], [args[a] for a in self.args] + list(rest)


def _locals(names: tuple[str, ...], table: str) -> str:
    if not names:
        return ""
    read = ", ".join(f"{table}[{n}]" for n in range(1, len(names) + 1))
    return f"local {', '.join(names)} = {read}"


# What a record knows of the generations stored above its own (``ahead``): ``advance`` moves a
# generation on through them and keeps the rest, at most AHEAD_CAP (dropping one only forgets).
_ADVANCE = f"""
local function advance(g, lists)
  local known = {{}}
  for _, list in ipairs(lists) do
    for x in string.gmatch(list, '%d+') do
      known[tonumber(x)] = true
    end
  end
  while known[g + 1] do
    g = g + 1
  end
  local above = {{}}
  for x, _ in pairs(known) do
    if x > g then
      table.insert(above, x)
    end
  end
  table.sort(above)
  local kept = {{}}
  for i = 1, math.min(#above, {AHEAD_CAP}) do
    kept[i] = string.format('%d', above[i])
  end
  return string.format('%d', g), table.concat(kept, ' ')
end
"""

# Publish only when newer than what is stored, atomically: two control-plane replicas
# publishing at once can never move the version backwards. ``base`` is the content digest a
# patch was read at ('' for a whole publish), ``generation`` and ``rest`` what a whole publish
# was built from ('' not known), ``carried`` the generations a patch carries (space-separated);
# then (name, digest, bytes) per part, the bytes empty for a part the publisher found stored
# with that digest. If one no longer is (another publisher wrote in between, or the part is
# gone), or a patch's content moved since it was read (a part added meanwhile, which it would
# delete), or an older control plane stored a newer whole snapshot (``legacy_version_key``: the
# gateways serve it, and a patch would put back the parts from before its change), nothing is
# written and -1 asks to read again. What a version was built from is kept with the version it
# came with (``built_from``), with the generations known stored above it
# (``ahead``: what patches carried past a gap, another control plane's change between them):
# a patch moves its base's on through those and the ones it carries, a whole publish starts
# from the furthest of its own, its base's and what its base knew stored above it (it read the
# database after those changes committed), unless ``alone`` says to record its own (the
# database may have gone back: a restored backup), and a version written without it (by an
# older control plane's script) leaves it naming an older version.
PUBLISH = Script(
    keys=(
        "version_key",
        "at_key",
        "digest_key",
        "parts_key",
        "built_from_key",
        "legacy_version_key",
    ),
    args=(
        "version",
        "at",
        "content",
        "part_prefix",
        "base",
        "generation",
        "rest",
        "alone",
        "carried",
    ),
    body=_ADVANCE
    + """
local stored = redis.call('GET', version_key)
if tonumber(version) <= tonumber(stored or '0') then
  return 0
end
if base ~= '' and (redis.call('GET', digest_key) ~= base
    or tonumber(redis.call('GET', legacy_version_key) or '0') > tonumber(stored or '0')) then
  return -1
end
local named = {}
for i = FIRST_REST, #ARGV, 3 do
  named[ARGV[i]] = true
  if ARGV[i + 2] == '' and (redis.call('HGET', parts_key, ARGV[i]) ~= ARGV[i + 1]
      or redis.call('EXISTS', part_prefix .. ARGV[i]) == 0) then
    return -1
  end
end
for i = FIRST_REST, #ARGV, 3 do
  if ARGV[i + 2] ~= '' then
    redis.call('SET', part_prefix .. ARGV[i], ARGV[i + 2])
    redis.call('HSET', parts_key, ARGV[i], ARGV[i + 1])
  end
end
for _, name in ipairs(redis.call('HKEYS', parts_key)) do
  if not named[name] then
    redis.call('HDEL', parts_key, name)
    redis.call('DEL', part_prefix .. name)
  end
end
redis.call('SET', version_key, version)
redis.call('SET', at_key, at)
redis.call('SET', digest_key, content)
local was = redis.call('HMGET', built_from_key, 'version', 'generation', 'rest', 'ahead')
local known = was[1] == stored and was[2]
local ahead = ''
if base ~= '' then
  generation, rest = '', ''
  if known then
    generation, ahead = advance(tonumber(was[2]), {was[4] or '', carried})
    rest = was[3] or ''
  end
elseif generation ~= '' and known and alone == '' then
  -- read after every change the patches stored before it carried (each got its version
  -- after they committed, and before this one): every one up to the highest is in it
  local top = math.max(tonumber(generation), tonumber(was[2]))
  for x in string.gmatch(was[4] or '', '%d+') do
    top = math.max(top, tonumber(x))
  end
  generation = string.format('%d', top)
end
if generation == '' then
  redis.call('DEL', built_from_key)
else
  redis.call('HSET', built_from_key, 'version', version, 'generation', generation, 'rest', rest,
    'ahead', ahead)
end
return 1
""",
)

# Vouch for the stored content: if the store still holds ``version`` with the content digest
# ``content``, it is stored again unchanged as ``new`` (a newer version), built from
# ``generation`` and ``rest``. Never onto ``version`` itself: a patch whose version was handed
# out before the state vouched for was read could still land on it (see
# ``SnapshotPublisher.vouch``). 1 done, 0 not (the store moved on, or ``new`` is not newer).
VOUCH = Script(
    keys=("version_key", "digest_key", "built_from_key"),
    args=("version", "content", "new", "generation", "rest", "alone"),
    body=_ADVANCE
    + """
local stored = redis.call('GET', version_key)
if stored ~= version or redis.call('GET', digest_key) ~= content
    or tonumber(new) <= tonumber(stored) then
  return 0
end
local was = redis.call('HMGET', built_from_key, 'version', 'generation', 'ahead')
local ahead = ''
if was[1] == stored and was[2] and alone == '' then
  generation, ahead = advance(math.max(tonumber(generation), tonumber(was[2])), {was[3] or ''})
end
redis.call('SET', version_key, new)
redis.call('HSET', built_from_key, 'version', new, 'generation', generation, 'rest', rest,
  'ahead', ahead)
return 1
""",
)

# What the store holds is whole: its content digest, or false when a version lists no part
# or a listed part is gone (evicted, deleted by hand), so the control plane publishes again.
DIGEST = Script(
    keys=("version_key", "digest_key", "parts_key", "at_key"),
    args=("part_prefix",),
    body="""
if not redis.call('GET', version_key) or not redis.call('GET', at_key) then
  return false
end
local listed = redis.call('HKEYS', parts_key)
if #listed == 0 then
  return false
end
for _, name in ipairs(listed) do
  if redis.call('EXISTS', part_prefix .. name) == 0 then
    return false
  end
end
return redis.call('GET', digest_key)
""",
)

# The next version: one more than the last, and never below the publisher's clock in ms, so a
# Redis that restarted empty (its counter back at 0) still hands out versions above those the
# gateways hold, and they load the next snapshot instead of taking it for the one they have.
NEXT_VERSION = Script(
    keys=("counter_key",),
    args=("floor",),
    body="""
local next_version = redis.call('INCR', counter_key)
if next_version < tonumber(floor) then
  redis.call('SET', counter_key, floor)
  next_version = tonumber(floor)
end
return next_version
""",
)

# A gateway serving ``version`` found the store holding an older one: raise what gateways are
# known to serve (``served_key``) to it, never lower it (gateways report each poll while behind).
REPORT_SERVED = Script(
    keys=("served_key",),
    args=("version",),
    body="""
local held = redis.call('GET', served_key)
if not held or tonumber(held) < tonumber(version) then
  redis.call('SET', served_key, version)
end
return 1
""",
)
