//! Counters in Redis, shared by every control-plane replica: one Lua script per update, so a
//! request's check-and-add over all its descriptors is atomic (a single Redis, or a primary
//! with replicas; not Redis Cluster, whose keys of one request could sit on different nodes).

use super::{Applied, CounterError, Counters, Item, Op};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// The transcription of [`super::decide`]: ARGV[1] is the op, then per key hits, limit, ttl.
/// Returns {admitted, count_1, ..., count_n}.
const SCRIPT: &str = r#"
local op = ARGV[1]
local n = #KEYS
local cur = {}
for i = 1, n do cur[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
local admitted = 1
if op == 'check' then
  for i = 1, n do
    if cur[i] + tonumber(ARGV[3*i-1]) > tonumber(ARGV[3*i]) then admitted = 0 end
  end
end
if admitted == 1 then
  for i = 1, n do
    local hits = tonumber(ARGV[3*i-1])
    if hits > 0 then
      if op == 'release' then
        local d = math.min(hits, cur[i])
        if d > 0 then cur[i] = redis.call('DECRBY', KEYS[i], d) end
      else
        cur[i] = redis.call('INCRBY', KEYS[i], hits)
        if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3*i+1])) end
      end
    end
  end
end
local out = {admitted}
for i = 1, n do out[i+1] = cur[i] end
return out
"#;

/// Counters in the Redis at a URL (`redis://[:password@]host:port/db`).
pub struct RedisCounters {
    client: redis::Client,
    script: redis::Script,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl RedisCounters {
    /// Parses the URL; connects on first use (and again after a failure), so a control plane
    /// starts while Redis is still coming up, and fleet checks fail (UNAVAILABLE) until it is.
    pub fn new(url: &str) -> Result<Self, CounterError> {
        let client = redis::Client::open(url).map_err(|e| CounterError::Redis(format!("invalid Redis URL: {e}")))?;
        Ok(Self { client, script: redis::Script::new(SCRIPT), conn: Mutex::new(None) })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CounterError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await.map_err(|e| CounterError::Redis(e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

#[async_trait::async_trait]
impl Counters for RedisCounters {
    async fn apply(&self, op: Op, items: &[Item], _now_secs: u64) -> Result<Applied, CounterError> {
        let mut conn = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        inv.arg(match op {
            Op::Check => "check",
            Op::Release => "release",
            Op::Debit => "debit",
        });
        for i in items {
            inv.key(&i.key).arg(i.hits).arg(i.limit).arg(i.ttl_secs);
        }
        let out: Vec<i64> = match inv.invoke_async(&mut conn).await {
            Ok(v) => v,
            Err(e) => {
                // Reconnect next time: the connection may be the problem.
                *self.conn.lock().await = None;
                return Err(CounterError::Redis(e.to_string()));
            }
        };
        let (first, counts) = out.split_first().ok_or_else(|| CounterError::Redis("the script returned nothing".into()))?;
        if counts.len() != items.len() {
            return Err(CounterError::Redis(format!("the script returned {} counts for {} keys", counts.len(), items.len())));
        }
        Ok(Applied { admitted: *first == 1, counts: counts.iter().map(|c| u64::try_from(*c).unwrap_or(0)).collect() })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
