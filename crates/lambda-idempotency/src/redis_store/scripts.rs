//! The Lua scripts, one per operation that must compare before it writes:
//! the fenced completion, release and renewal, and the two claims that are
//! scripts only off the common path (Redis before 7.0, and replicas that
//! must acknowledge). Each compares the owner token inside the value, so a
//! write by an instance whose lease was taken over changes nothing.

/// Claim for servers without `SET … NX … GET` (before Redis 7.0).
pub(super) const CLAIM_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// The claim when replicas must acknowledge it (`WAIT` follows it): a
/// record found is written back as it is (same value, same expiry), so
/// that `WAIT` covers what was read, not only what this claim wrote. A
/// replay, `409` or `422` is then never answered from a record that a
/// failover could still lose.
pub(super) const CLAIM_CONFIRMED_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('SET', KEYS[1], v, 'KEEPTTL')
  return v
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Writes the completed record if it is absent or owned by ARGV[1].
pub(super) const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local nl = string.find(v, '\n', 2, true)
  if not nl or string.sub(v, 2, nl - 1) ~= ARGV[1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Deletes the record if it starts with ARGV[1] (`p<owner>\n`).
pub(super) const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Rewrites the record with a new lease if it starts with ARGV[1].
pub(super) const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";
