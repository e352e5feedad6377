-- rate_limit: take one token from each of N token buckets, from all of them or from none.
-- KEYS[i] wr:{S}:rl:{kind}:{client} hash tokens, ts_ms: one bucket (a client's or the sale's)
-- ARGV[1] offset_ms      test clock offset (0 in production)
-- ARGV[2i] rate_per_s    refill of bucket KEYS[i], tokens per second (> 0)
-- ARGV[2i+1] burst       capacity of bucket KEYS[i], tokens (>= 1)
-- Returns {'OK'} | {'RATE_LIMITED', retry_after_ms, i}: i = the bucket that waits longest
local offset_ms = tonumber(ARGV[1])

local now = now_ms(offset_ms)
local levels, wait_ms, which = {}, 0, 0
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts_ms')
  local tokens = burst
  if b[1] then
    tokens = math.min(burst, tonumber(b[1]) + math.max(now - tonumber(b[2]), 0) * rate / 1000)
  end
  if tokens < 1 then
    local wait = math.ceil((1 - tokens) * 1000 / rate)
    if wait > wait_ms then wait_ms, which = wait, i end
  end
  levels[i] = tokens
end
-- A refused request takes nothing, so it cannot drain the other buckets.
if which > 0 then return { 'RATE_LIMITED', wait_ms, which } end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.6f', levels[i] - 1), 'ts_ms', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst * 1000 / rate) + 1000)
end
return { 'OK' }
