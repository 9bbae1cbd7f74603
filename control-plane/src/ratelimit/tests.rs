//! The rate-limit service on both backends: fixed windows, all-or-nothing checks, Cordon's
//! release and debit ops, replicas sharing Redis, and Redis down. Redis tests start their own
//! `redis-server` on a free loopback port and stop it.

use super::memory::MemoryCounters;
use super::redis::RedisCounters;
use super::*;
use cordon_proto::rls::RateLimitDescriptor;
use cordon_proto::rls::rate_limit_descriptor::{Entry, RateLimitOverride};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NOW: u64 = 1_800_000_000; // a minute boundary: 1_800_000_000 % 60 == 0

fn desc(pairs: &[(&str, &str)], limit: u32, hits: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: pairs.iter().map(|(k, v)| Entry { key: k.to_string(), value: v.to_string() }).collect(),
        limit: Some(RateLimitOverride { requests_per_unit: limit, unit: Unit::Minute as i32 }),
        hits_addend: Some(hits),
    }
}

fn req(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest { domain: "cordon".into(), descriptors, hits_addend: 0 }
}

fn codes(r: &RateLimitResponse) -> (i32, Vec<i32>, Vec<u32>) {
    (r.overall_code, r.statuses.iter().map(|s| s.code).collect(), r.statuses.iter().map(|s| s.limit_remaining).collect())
}

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

/// What every backend must do.
async fn the_service_contract(c: &dyn Counters) {
    let a = [("cordon_limit", "a"), ("team", "ml")];
    let b = [("cordon_limit", "b"), ("team", "ml")];
    // 3 of 5, then 2 of 5: full.
    let r = should_rate_limit(c, &req(vec![desc(&a, 5, 3)]), NOW).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![2]));
    assert_eq!(r.statuses[0].duration_until_reset.unwrap().seconds, 60);
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "a");
    should_rate_limit(c, &req(vec![desc(&a, 5, 2)]), NOW + 1).await.unwrap();
    // Over: nothing is consumed, on any descriptor of the request (b stays at 0).
    let r = should_rate_limit(c, &req(vec![desc(&b, 5, 1), desc(&a, 5, 1)]), NOW + 2).await.unwrap();
    assert_eq!(codes(&r), (OVER, vec![OK, OVER], vec![5, 0]));
    assert_eq!(r.statuses[1].duration_until_reset.unwrap().seconds, 58);
    let r = should_rate_limit(c, &req(vec![desc(&b, 5, 5)]), NOW + 2).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![0]), "b was untouched by the refused request");
    // Cordon's release takes hits back (never below zero); debit adds past the limit.
    let release = |n| desc(&[("cordon_limit", "a"), ("team", "ml"), ("cordon_op", "release")], 5, n);
    let r = should_rate_limit(c, &req(vec![release(4)]), NOW + 3).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![4]));
    should_rate_limit(c, &req(vec![release(100)]), NOW + 3).await.unwrap();
    let debit = desc(&[("cordon_limit", "a"), ("cordon_op", "debit"), ("team", "ml")], 5, 7);
    let r = should_rate_limit(c, &req(vec![debit]), NOW + 4).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![0]), "usage that happened is counted even past the limit");
    let r = should_rate_limit(c, &req(vec![desc(&a, 5, 1)]), NOW + 5).await.unwrap();
    assert_eq!(r.overall_code, OVER);
    // The next window starts empty.
    let r = should_rate_limit(c, &req(vec![desc(&a, 5, 1)]), NOW + 60).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![4]));
    // Request-level hits_addend counts for descriptors without their own; 0 means 1.
    let mut d = desc(&[("cordon_limit", "c")], 10, 0);
    d.hits_addend = None;
    let mut r2 = req(vec![d.clone()]);
    r2.hits_addend = 4;
    assert_eq!(codes(&should_rate_limit(c, &r2, NOW).await.unwrap()).2, vec![6]);
    assert_eq!(codes(&should_rate_limit(c, &req(vec![d]), NOW).await.unwrap()).2, vec![5]);
    // A descriptor with no limit override: no rule, OK.
    let mut free = desc(&[("x", "y")], 1, 1);
    free.limit = None;
    let r = should_rate_limit(c, &req(vec![free]), NOW).await.unwrap();
    assert_eq!(r.overall_code, OK);
    assert!(r.statuses[0].current_limit.is_none());
}

#[tokio::test]
async fn memory_counters_keep_the_contract() {
    let c = MemoryCounters::new();
    the_service_contract(&c).await;
}

#[tokio::test]
async fn bad_descriptors_are_refused_with_the_field() {
    let c = MemoryCounters::new();
    let e = should_rate_limit(&c, &req(vec![desc(&[("cordon_limit", "a"), ("cordon_op", "refund")], 5, 1)]), NOW).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("descriptors[0]") && e.message().contains("refund"), "{}", e.message());
    let mut week = desc(&[("cordon_limit", "a")], 5, 1);
    week.limit.as_mut().unwrap().unit = 7;
    let e = should_rate_limit(&c, &req(vec![week]), NOW).await.unwrap_err();
    assert!(e.message().contains("descriptors[0].limit.unit"), "{}", e.message());
}

#[test]
fn decide_is_all_or_nothing() {
    let item = |hits, limit| Item { key: String::new(), hits, limit, ttl_secs: 1 };
    let items = [item(2, 5), item(2, 3)];
    assert_eq!(decide(Op::Check, &items, &[1, 2]), Applied { admitted: false, counts: vec![1, 2] });
    assert_eq!(decide(Op::Check, &items, &[1, 1]), Applied { admitted: true, counts: vec![3, 3] });
    assert_eq!(decide(Op::Debit, &items, &[5, 3]), Applied { admitted: true, counts: vec![7, 5] });
    assert_eq!(decide(Op::Release, &items, &[1, 3]), Applied { admitted: true, counts: vec![0, 1] });
}

/// A `redis-server` of our own on a free loopback port, stopped on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server, see scripts/apt-packages.txt)");
        // Owned at once: dropped (killed and reaped) on every path, the panic below included.
        let server = Self { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_counters_keep_the_contract() {
    let redis = RedisServer::start();
    let c = RedisCounters::new(&redis.url()).unwrap();
    the_service_contract(&c).await;
}

#[tokio::test]
async fn replicas_on_one_redis_share_a_limit_exactly_under_contention() {
    let redis = RedisServer::start();
    let replicas: Vec<Arc<dyn Counters>> =
        (0..2).map(|_| Arc::new(RedisCounters::new(&redis.url()).unwrap()) as Arc<dyn Counters>).collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = Arc::clone(&replicas[i % 2]);
        tasks.push(tokio::spawn(async move {
            let d = desc(&[("cordon_limit", "shared")], 10, 1);
            let mut d = d;
            d.limit.as_mut().unwrap().unit = Unit::Day as i32;
            should_rate_limit(c.as_ref(), &req(vec![d]), now).await.unwrap().overall_code
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap() == OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "64 concurrent checks over two replicas admit exactly the limit");
}

#[tokio::test]
async fn redis_down_is_unavailable_and_recovers_when_it_is_back() {
    let redis = RedisServer::start();
    let url = redis.url();
    let port = redis.port;
    let c = RedisCounters::new(&url).unwrap();
    should_rate_limit(&c, &req(vec![desc(&[("cordon_limit", "a")], 5, 1)]), NOW).await.unwrap();
    drop(redis);
    let e = should_rate_limit(&c, &req(vec![desc(&[("cordon_limit", "a")], 5, 1)]), NOW).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("Redis"), "{}", e.message());
    // Back on the same port: the next call reconnects.
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let back = RedisServer { child, port };
    let mut ok = false;
    for _ in 0..200 {
        if should_rate_limit(&c, &req(vec![desc(&[("cordon_limit", "a")], 5, 1)]), NOW).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(back);
    assert!(ok, "reconnected once Redis was back");
}

#[test]
fn an_invalid_redis_url_says_so() {
    let e = RedisCounters::new("http://nope").err().unwrap();
    assert!(e.to_string().contains("invalid Redis URL"), "{e}");
}

#[tokio::test]
async fn a_monthly_budget_counts_the_calendar_month_and_resets_on_the_first() {
    let c = MemoryCounters::default();
    let month = |hits: u64| {
        let mut d = desc(&[("cordon_limit", "team-monthly"), ("team", "ml")], 100, hits);
        d.limit.as_mut().unwrap().unit = Unit::Month as i32;
        req(vec![d])
    };
    // 2026-11-30 11:00 UTC, then the last second of November, then December 1st.
    let nov_30 = 1_796_036_400;
    let last_second = nov_30 + 13 * 3_600 - 1;
    let r = should_rate_limit(&c, &month(60), nov_30).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![40]));
    assert_eq!(r.statuses[0].duration_until_reset.as_ref().map(|d| d.seconds), Some(13 * 3_600), "until December 1st");
    let r = should_rate_limit(&c, &month(60), last_second).await.unwrap();
    assert_eq!(codes(&r), (OVER, vec![OVER], vec![40]), "still November: 60 more do not fit");
    let r = should_rate_limit(&c, &month(60), last_second + 1).await.unwrap();
    assert_eq!(codes(&r), (OK, vec![OK], vec![40]), "a new month, a new budget");
}
