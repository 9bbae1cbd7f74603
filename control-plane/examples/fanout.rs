//! Fan-out benchmark: N simulated nodes hold policy streams to a real control plane (in this
//! process, over loopback TCP, 100 streams per HTTP/2 connection); each new version's push
//! latency is measured from the start of `apply` (store write,
//! signing and publication included) to each node receiving the response.
//!
//! `cargo run --release -p cordon-control-plane --example fanout -- 1000 10000`
//!
//! Memory per stream is the process RSS growth while opening the streams divided by N; it
//! includes both the server's and the simulated clients' side, so it is an upper bound.

use cordon_control_plane::auth::Tokens;
use cordon_control_plane::server::{self, ServerConfig};
use cordon_control_plane::signing::BundleSigner;
use cordon_control_plane::store::SqliteStore;
use cordon_proto::v1::policy_discovery_service_client::PolicyDiscoveryServiceClient;
use cordon_proto::v1::{DiscoveryRequest, Node, POLICY_TYPE_URL};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const STREAMS_PER_CONNECTION: usize = 100;
const ROUNDS: usize = 5;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn policy(n: usize) -> String {
    format!("models:\n  - allow: ['model-{n}-*']\n")
}

async fn run(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tokens = Tokens::parse("bench operator bench-token-0123456789")?;
    let cfg = ServerConfig::new(Arc::new(SqliteStore::open_in_memory()?), BundleSigner::generate(), tokens);
    let srv = server::start(listener, cfg).await?;
    srv.service.apply("bench", &policy(0), "", false).await?;
    let url = format!("http://{}", srv.addr);

    let rss0 = rss_kib();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, Instant)>();
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
                let _ = seen.send((r.version_info.clone(), Instant::now()));
                let ack = DiscoveryRequest { version_info: r.version_info, response_nonce: r.nonce, ..Default::default() };
                if tx.send(ack).await.is_err() {
                    return;
                }
            }
        });
    }
    let connect_start = Instant::now();
    for _ in 0..n {
        seen_rx.recv().await.ok_or("node tasks ended")?;
    }
    let connect_all = connect_start.elapsed();
    // Let ACKs land before measuring memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib();

    let mut all = vec![];
    for round in 1..=ROUNDS {
        let t0 = Instant::now();
        let out = srv.service.apply("bench", &policy(round), "", false).await?;
        let version = out.version.ok_or("no version")?.number.to_string();
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            let (v, at) = seen_rx.recv().await.ok_or("node tasks ended")?;
            if v == version {
                lat.push(at - t0);
            }
        }
        // Wait until every node ACKed, so the next round is not held back by flow control.
        while srv.nodes.status(&version).iter().filter(|s| s.state == "SYNCED").count() < n {
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
    all.sort();
    println!(
        "N={n}: push latency over {ROUNDS} versions: p50 {:.2} ms, p99 {:.2} ms; initial sync of all streams {:.0} ms; memory {:.1} KiB per stream (server + simulated client, RSS {} -> {} KiB)",
        pct(&all, 0.5).as_secs_f64() * 1e3,
        pct(&all, 0.99).as_secs_f64() * 1e3,
        connect_all.as_secs_f64() * 1e3,
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        rss0,
        rss1
    );
    srv.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000, 10_000] } else { sizes };
    println!(
        "fan-out: {} worker threads, {STREAMS_PER_CONNECTION} streams per HTTP/2 connection",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for n in sizes {
        run(n).await?;
    }
    Ok(())
}
