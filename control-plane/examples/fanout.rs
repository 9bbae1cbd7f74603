//! Fan-out benchmark: N simulated nodes hold policy streams to a real control plane (over
//! loopback TCP, 100 streams per HTTP/2 connection); each new version's push latency is
//! measured from the start of `apply` (store write, signing and publication included) to each
//! node receiving the response.
//!
//! `cargo run --release -p cordon-control-plane --example fanout -- 1000 10000`
//!
//! By default the simulated nodes run in this process, sharing its runtime with the server.
//! With `--clients-process` they run in a child process (this binary again, `--client URL N`),
//! so the server's runtime only does the server's work and the RSS growth measured here is the
//! server's alone; the two processes still share the machine's cores. Receipt times are then
//! wall-clock (`SystemTime`) in both processes, which on one host read the same clock.
//!
//! Memory per stream is the RSS growth while opening the streams divided by N: in-process it
//! includes both the server's and the simulated clients' side, so it is an upper bound.

use cordon_control_plane::auth::Tokens;
use cordon_control_plane::server::{self, ServerConfig};
use cordon_control_plane::signing::BundleSigner;
use cordon_control_plane::store::SqliteStore;
use cordon_core::bundle::POLICY_TYPE_URL;
use cordon_proto::v1::policy_discovery_service_client::PolicyDiscoveryServiceClient;
use cordon_proto::v1::{DiscoveryRequest, Node};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const STREAMS_PER_CONNECTION: usize = 100;
const ROUNDS: usize = 5;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// CPU time (user + system, all threads) this process has used, from /proc/self/stat.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Wall-clock nanoseconds: comparable across processes on one host.
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn policy(n: usize) -> String {
    format!("models:\n  - allow: ['model-{n}-*']\n")
}

/// Opens `n` node streams to `url` that ACK every response; yields, per version, the receipt
/// times (unix ns) once all `n` nodes received it.
async fn clients(url: String, n: usize) -> Result<mpsc::UnboundedReceiver<(String, Vec<u64>)>, Error> {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, u64)>();
    let mut channels = vec![];
    for _ in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }
    for i in 0..n {
        let mut client = PolicyDiscoveryServiceClient::new(channels[i / STREAMS_PER_CONNECTION].clone());
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(4);
            let first = DiscoveryRequest {
                node: Some(Node { id: format!("node-{i}"), ..Default::default() }),
                type_url: POLICY_TYPE_URL.into(),
                ..Default::default()
            };
            if tx.send(first).await.is_err() {
                return;
            }
            let Ok(resp) = client.stream_policies(ReceiverStream::new(rx)).await else { return };
            let mut inbound = resp.into_inner();
            while let Ok(Some(r)) = inbound.message().await {
                let _ = seen.send((r.version_info.clone(), now_ns()));
                let ack = DiscoveryRequest { version_info: r.version_info, response_nonce: r.nonce, ..Default::default() };
                if tx.send(ack).await.is_err() {
                    return;
                }
            }
        });
    }
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut per_version: HashMap<String, Vec<u64>> = HashMap::new();
        while let Some((v, at)) = seen_rx.recv().await {
            let times = per_version.entry(v.clone()).or_insert_with(|| Vec::with_capacity(n));
            times.push(at);
            if times.len() == n {
                let times = per_version.remove(&v).unwrap_or_default();
                if done_tx.send((v, times)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(done_rx)
}

/// Child-process mode: prints `v <version> <ns>...` per completed version on stdout.
async fn client_process(url: String, n: usize) -> Result<(), Error> {
    let mut done = clients(url, n).await?;
    let mut out = tokio::io::stdout();
    while let Some((v, times)) = done.recv().await {
        let mut line = format!("v {v}");
        for t in times {
            line.push(' ');
            line.push_str(&t.to_string());
        }
        line.push('\n');
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// Completed versions from a child process's stdout.
fn from_child(child: &mut tokio::process::Child) -> Result<mpsc::UnboundedReceiver<(String, Vec<u64>)>, Error> {
    let stdout = child.stdout.take().ok_or("child stdout")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split(' ');
            if words.next() != Some("v") {
                continue;
            }
            let v = words.next().unwrap_or("").to_string();
            let times = words.filter_map(|w| w.parse().ok()).collect();
            if tx.send((v, times)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

async fn run(n: usize, separate: bool) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tokens = Tokens::parse("bench operator bench-token-0123456789")?;
    let cfg = ServerConfig::new(Arc::new(SqliteStore::open_in_memory()?), BundleSigner::generate(), tokens);
    let srv = server::start(listener, cfg).await?;
    srv.service.apply("bench", &policy(0), "", false).await?;
    let url = format!("http://{}", srv.addr);

    let rss0 = rss_kib();
    let connect_start = Instant::now();
    let mut child = None;
    let mut done = if separate {
        let mut c = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--client", &url, &n.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let rx = from_child(&mut c)?;
        child = Some(c);
        rx
    } else {
        clients(url, n).await?
    };
    done.recv().await.ok_or("node tasks ended")?;
    let connect_all = connect_start.elapsed();
    // Let ACKs land before measuring memory.
    while srv.nodes.synced(&srv.service.current_version()) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib();

    let mut all = vec![];
    let cpu0 = cpu_time();
    for round in 1..=ROUNDS {
        let t0 = now_ns();
        let out = srv.service.apply("bench", &policy(round), "", false).await?;
        let version = out.version.ok_or("no version")?.number.to_string();
        let (v, times) = done.recv().await.ok_or("node tasks ended")?;
        if v != version {
            return Err(format!("expected version {version}, nodes completed {v}").into());
        }
        let mut lat: Vec<Duration> = times.iter().map(|&t| Duration::from_nanos(t.saturating_sub(t0))).collect();
        // Wait until every node ACKed, so the next round is not held back by flow control.
        while srv.nodes.synced(&version) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lat.sort();
        println!(
            "  N={n:>6} round {round}: p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            lat[n - 1].as_secs_f64() * 1e3
        );
        all.extend(lat);
    }
    let cpu = cpu_time() - cpu0;
    all.sort();
    let whose = if separate { "server only; clients in a separate process" } else { "server + simulated clients" };
    println!(
        "N={n}: push latency over {ROUNDS} versions: p50 {:.2} ms, p99 {:.2} ms; initial sync of all streams {:.0} ms; memory {:.1} KiB per stream ({whose}, RSS {} -> {} KiB)",
        pct(&all, 0.5).as_secs_f64() * 1e3,
        pct(&all, 0.99).as_secs_f64() * 1e3,
        connect_all.as_secs_f64() * 1e3,
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        rss0,
        rss1
    );
    println!(
        "N={n}: CPU of this process over the {ROUNDS} versions {:.0} ms = {:.1} µs per push ({})",
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / (ROUNDS * n) as f64,
        if separate { "server only, incl. waiting for ACKs" } else { "server + simulated clients" }
    );
    if let Some(mut c) = child {
        let _ = c.kill().await;
    }
    srv.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--client") {
        let url = args.get(1).ok_or("--client URL N")?.clone();
        let n = args.get(2).and_then(|a| a.parse().ok()).ok_or("--client URL N")?;
        return client_process(url, n).await;
    }
    let separate = args.iter().any(|a| a == "--clients-process");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000, 10_000] } else { sizes };
    println!(
        "fan-out: {} worker threads, {STREAMS_PER_CONNECTION} streams per HTTP/2 connection, simulated nodes {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if separate { "in a separate process" } else { "in this process" }
    );
    for n in sizes {
        run(n, separate).await?;
    }
    Ok(())
}
