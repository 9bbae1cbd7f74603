//! cordonctl and cordon-control-plane as real processes.

// The control plane's own test support: a real server (and TLS PKI) on a free loopback port.
#[allow(dead_code)]
#[path = "../../tests/support/audit.rs"]
mod audit;
#[allow(dead_code)]
#[path = "../../tests/support/pki.rs"]
mod pki;
#[allow(dead_code)]
#[path = "../../tests/support/server.rs"]
mod server;

/// A binary of the workspace, beside this test's own executable (`target/<profile>/`).
fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: cargo build -p cordon-control-plane -p cordonctl --bins", bin.display());
    bin
}

use pki::*;
use server::*;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn ctl(addr: std::net::SocketAddr, token: &str, args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_cordonctl"))
        .args(args)
        .env("CORDON_SERVER", format!("http://{addr}"))
        .env("CORDON_TOKEN", token)
        .output()
        .await
        .unwrap();
    Out { ok: o.status.success(), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
}

#[tokio::test]
async fn cordonctl_drives_the_policy_lifecycle() {
    let r = start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, policy_yaml("gpt-4o*")).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "models:\n  - allow: ['a']\n    colour: red\n").unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());

    let o = ctl(r.addr, VIEW_TOKEN, &["validate", "-f", bad]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains(&format!("{bad}:3:")), "{}", o.stderr);
    assert!(ctl(r.addr, VIEW_TOKEN, &["validate", "-f", good]).await.stdout.contains("valid"));

    let o = ctl(r.addr, OPS_TOKEN, &["apply", "-f", good, "--dry-run"]).await;
    assert!(o.ok && o.stdout.contains("dry run"), "{}{}", o.stdout, o.stderr);
    let o = ctl(r.addr, OPS_TOKEN, &["apply", "-f", good, "-m", "first"]).await;
    assert!(o.ok && o.stdout.contains("applied: version 1"), "{}{}", o.stdout, o.stderr);
    let o = ctl(r.addr, VIEW_TOKEN, &["apply", "-f", good]).await;
    assert!(!o.ok && o.stderr.contains("operator role"), "{}", o.stderr);

    let o = ctl(r.addr, OPS_TOKEN, &["keys", "create", "--id", "k1", "--user", "alice", "--team", "ml"]).await;
    assert!(o.ok, "{}", o.stderr);
    let plaintext = o.stdout.lines().next().unwrap().to_string();
    assert!(plaintext.starts_with("ck_"));
    let o = ctl(r.addr, VIEW_TOKEN, &["keys", "list", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["keys"][0]["sha256"], cordon_control_plane::policy::sha256_hex(plaintext.as_bytes()));
    assert!(!o.stdout.contains(&plaintext), "the plaintext is never shown again");

    let mut node = Node::connect(&r, "envoy-1", "").await;
    let resp = node.recv().await;
    assert_eq!(resp.version_info, "2");
    node.nack(&resp, "", "bundle signature does not verify").await;
    wait_status(&r, "envoy-1", |s| s.state == "NACKED").await;
    let o = ctl(r.addr, VIEW_TOKEN, &["status"]).await;
    let line = o.stdout.lines().find(|l| l.starts_with("envoy-1")).unwrap_or_default();
    assert!(line.contains("NACKED") && line.contains("bundle signature does not verify"), "{}", o.stdout);

    assert!(ctl(r.addr, OPS_TOKEN, &["keys", "revoke", "k1"]).await.stdout.contains("revoked; policy version 3"));
    let resp = node.recv().await;
    node.ack(&resp).await;
    wait_status(&r, "envoy-1", |s| s.state == "SYNCED").await;
    let o = ctl(r.addr, VIEW_TOKEN, &["status", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!((v["current_version"].as_str(), v["nodes"][0]["state"].as_str()), (Some("3"), Some("SYNCED")));

    let o = ctl(r.addr, VIEW_TOKEN, &["history"]).await;
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("VERSION") && lines[1].contains("key revoke k1") && lines[3].contains("first"), "{}", o.stdout);
    // Rolling back to version 1's document while it is current changes nothing...
    assert!(ctl(r.addr, OPS_TOKEN, &["rollback", "1"]).await.stdout.contains("unchanged: version 3"));
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, policy_yaml("claude-*")).unwrap();
    assert!(ctl(r.addr, OPS_TOKEN, &["apply", "-f", other.to_str().unwrap()]).await.stdout.contains("applied: version 4"));
    // ...after another change it restores the document (the revoked key stays revoked).
    assert!(ctl(r.addr, OPS_TOKEN, &["rollback", "1"]).await.stdout.contains("applied: version 5"));
    let o = ctl(r.addr, VIEW_TOKEN, &["diff", "-f", good]).await;
    assert!(o.stdout.contains("no change against version 5"), "{}", o.stdout);
    let o = ctl(r.addr, AUDIT_TOKEN, &["log"]).await;
    assert!(o.stdout.contains("keys revoke") && o.stdout.contains("denied"), "{}", o.stdout);
    r.shutdown().await;
}

#[tokio::test]
async fn embedded_server_binary_starts_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_bin("cordon-control-plane"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("CORDON_SIGNING_KEY")
        .env_remove("CORDON_ADMIN_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.unwrap().unwrap().unwrap();
    let addr: std::net::SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(line.contains("trusted_key={\"key_id\":\"ed25519:"), "{line}");
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let o = ctl(addr, token.trim(), &["status"]).await;
    assert!(o.ok && o.stdout.contains("current version: (none)"), "{}{}", o.stdout, o.stderr);
    let o = ctl(addr, "wrong-token-wrong-token", &["status"]).await;
    assert!(!o.ok && o.stderr.contains("--token"), "{}", o.stderr);
    child.kill().await.unwrap();
}

struct TlsOut {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn ctl_env(args: &[&str], envs: &[(&str, &Path)]) -> TlsOut {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cordonctl"));
    cmd.args(args).env_remove("CORDON_TOKEN").env_remove("CORDON_SERVER");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let o = cmd.output().await.unwrap();
    TlsOut { ok: o.status.success(), stdout: String::from_utf8_lossy(&o.stdout).into(), stderr: String::from_utf8_lossy(&o.stderr).into() }
}

#[tokio::test]
async fn cordonctl_over_mtls() {
    let s = setup();
    let r = start_tls(&s, true, tokens()).await;
    let (cert, key) = s.pki.client("operator", "operator.admin.test");
    let server = format!("https://localhost:{}", r.addr.port());
    let (ca, cert, key) = (s.pki.ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap());
    let flags = ["--server", &server, "--token", OPS_TOKEN, "--ca-cert", ca, "--client-cert", cert, "--client-key", key];

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, policy_yaml("gpt-4o*")).unwrap();
    let o = ctl_env(&[&flags[..], &["apply", "-f", policy.to_str().unwrap()]].concat(), &[]).await;
    assert!(o.ok && o.stdout.contains("applied: version 1"), "{}{}", o.stdout, o.stderr);
    let o = ctl_env(&[&flags[..], &["keys", "create", "--id", "k1", "--user", "u", "--team", "t"]].concat(), &[]).await;
    assert!(o.ok && o.stdout.starts_with("ck_"), "{}{}", o.stdout, o.stderr);

    // The same through the environment.
    let o = ctl_env(
        &["--server", &server, "--token", VIEW_TOKEN, "status"],
        &[("CORDON_CA_CERT", Path::new(ca)), ("CORDON_CLIENT_CERT", Path::new(cert)), ("CORDON_CLIENT_KEY", Path::new(key))],
    )
    .await;
    assert!(o.ok && o.stdout.contains("current version: 2"), "{}{}", o.stdout, o.stderr);

    // Without the client certificate the server refuses; without --ca-cert cordonctl says so.
    let o = ctl_env(&["--server", &server, "--token", VIEW_TOKEN, "--ca-cert", ca, "status"], &[]).await;
    assert!(!o.ok && o.stderr.contains("--client-cert"), "{}{}", o.stdout, o.stderr);
    let o = ctl_env(&["--server", &server, "--token", VIEW_TOKEN, "status"], &[]).await;
    assert!(!o.ok && o.stderr.contains("--ca-cert"), "{}", o.stderr);
    let o = ctl_env(&["--server", &format!("http://{}", r.addr), "--ca-cert", ca, "status"], &[]).await;
    assert!(!o.ok && o.stderr.contains("https://"), "{}", o.stderr);
    r.shutdown().await;
}

#[tokio::test]
async fn cordonctl_registers_nodes_and_reads_the_audit_trail() {
    let r = start().await;
    let mut n = audit::AuditNode::connect(r.addr, "envoy-1", 1).await;
    let o = ctl(r.addr, VIEW_TOKEN, &["nodes", "register", "--node", "envoy-1", "--public-key", &n.public_key_b64()]).await;
    assert!(!o.ok && o.stderr.contains("operator role"), "{}", o.stderr);
    let o = ctl(r.addr, OPS_TOKEN, &["nodes", "register", "--node", "envoy-1", "--public-key", &n.public_key_b64()]).await;
    assert!(o.ok && o.stdout.contains("registered key ed25519:"), "{}{}", o.stdout, o.stderr);
    let o = ctl(r.addr, VIEW_TOKEN, &["nodes", "list"]).await;
    assert!(o.ok && o.stdout.contains("envoy-1") && o.stdout.contains("active"), "{}", o.stdout);

    let entries = n.seal(3, cordon_audit::record::Decision::Allow);
    assert_eq!(n.ship(n.batch(0, entries)).await.error, "");

    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "verify"]).await;
    assert!(o.ok && o.stdout.contains("3 entries"), "{}{}", o.stdout, o.stderr);
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "query", "--node", "envoy-1", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "prove", "envoy-1", "2"]).await;
    assert!(o.ok && o.stdout.contains("is leaf 2") && o.stdout.contains("\"type\":\"head\""), "{}{}", o.stdout, o.stderr);

    let dir = tempfile::tempdir().unwrap();
    let (out, keys) = (dir.path().join("trail.jsonl"), dir.path().join("nodes.txt"));
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "export", "--out", out.to_str().unwrap(), "--keys-out", keys.to_str().unwrap()]).await;
    assert!(o.ok, "{}", o.stderr);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut nodes = cordon_audit::batch::NodeKeys::default();
    for line in std::fs::read_to_string(&keys).unwrap().lines() {
        let (node, key) = line.split_once(' ').unwrap();
        let pk = cordon_audit::export::parse_public_key(key).unwrap();
        nodes.add(cordon_audit::record::Ident::new("node", node).unwrap(), &pk.to_bytes()).unwrap();
    }
    let cp = o.stderr.rsplit(' ').next().unwrap().trim();
    let trust = cordon_audit::export::Trust { nodes, control_plane: cordon_audit::export::parse_public_key(cp).unwrap(), pinned: vec![] };
    assert_eq!(cordon_audit::export::verify_export(&text, &trust).unwrap().entries, 3);

    let o = ctl(r.addr, OPS_TOKEN, &["nodes", "revoke", "--node", "envoy-1"]).await;
    assert!(o.ok, "{}", o.stderr);
    let entries = n.seal(1, cordon_audit::record::Decision::Allow);
    assert!(n.ship(n.batch(3, entries)).await.error.contains("revoked"));
    let o = ctl(r.addr, VIEW_TOKEN, &["audit", "nodes"]).await;
    assert!(o.ok && o.stdout.contains("envoy-1") && o.stdout.contains("revoked"), "{}", o.stdout);
    // `status` shows each node's audit state too, refusals included.
    let o = ctl(r.addr, VIEW_TOKEN, &["status"]).await;
    assert!(
        o.ok && o.stdout.contains("audit trail:") && o.stdout.contains("REFUSED BATCHES") && o.stdout.contains("revoked"),
        "{}",
        o.stdout
    );
    r.shutdown().await;
}

#[tokio::test]
async fn cordonctl_checks_consistency_between_signed_heads() {
    use base64::Engine;
    use cordon_control_plane::signing::BundleSigner;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cordon.db");
    let r = start_with(std::sync::Arc::new(cordon_control_plane::store::SqliteStore::open(&db).unwrap())).await;
    let signer = BundleSigner::from_seed(SEED).audit_signer();
    let key = base64::engine::general_purpose::STANDARD.encode(signer.public_key());
    let mut n = audit::AuditNode::connect(r.addr, "envoy-1", 1).await;
    let o = ctl(r.addr, OPS_TOKEN, &["nodes", "register", "--node", "envoy-1", "--public-key", &n.public_key_b64()]).await;
    assert!(o.ok, "{}", o.stderr);
    // Heads of size 3 and 5: `audit verify` signs one for whatever arrived.
    for (first, count) in [(0, 3), (3, 2)] {
        let entries = n.seal(count, cordon_audit::record::Decision::Allow);
        assert_eq!(n.ship(n.batch(first, entries)).await.error, "");
        assert!(ctl(r.addr, AUDIT_TOKEN, &["audit", "verify"]).await.ok);
    }

    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "3", "5", "--control-plane-key", &key]).await;
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("consistent: the head of size 5") && o.stdout.contains("extends the head of size 3"), "{}", o.stdout);
    assert!(o.stdout.contains("--control-plane-key"), "{}", o.stdout);
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "5", "5", "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["proof"].as_array().unwrap().len(), 0);

    // Asking wrongly is a usage error that says what to ask instead.
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "4", "5"]).await;
    assert!(!o.ok && o.stderr.contains("no signed tree head of size 4") && o.stderr.contains("3, 5"), "{}", o.stderr);
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "0", "5"]).await;
    assert!(!o.ok && o.stderr.contains("from size 0 proves nothing"), "{}", o.stderr);
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "5", "3"]).await;
    assert!(!o.ok && o.stderr.contains("older (smaller) head first"), "{}", o.stderr);
    let o = ctl(r.addr, VIEW_TOKEN, &["audit", "consistency", "3", "5"]).await;
    assert!(!o.ok && o.stderr.contains("auditor role"), "{}", o.stderr);

    // Another key than the one the reviewer trusts.
    let other = base64::engine::general_purpose::STANDARD.encode(cordon_audit::keys::Signer::from_seed(&[9; 32]).public_key());
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "3", "5", "--control-plane-key", &other]).await;
    assert!(!o.ok && o.stderr.contains("does NOT verify") && o.stderr.contains("not the trusted control-plane key"), "{}", o.stderr);

    // A split view: a head of size 4 properly signed with the control plane's key, over a root
    // that is not the log's. Its signature checks; the proof to the head of size 5 does not.
    let time_ms: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT time_ms FROM audit_heads WHERE size = 3", [], |row| row.get(0)).unwrap();
    let forged = signer.sign_head(cordon_audit::head::TreeHead { size: 4, root: [5; 32], time_ms: time_ms as u64 });
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO audit_heads (size, root, time_ms, key_id, signature) VALUES (4, ?1, ?2, ?3, ?4)",
            rusqlite::params![forged.head.root.to_vec(), time_ms, forged.key_id, forged.signature.to_vec()],
        )
        .unwrap();
    let o = ctl(r.addr, AUDIT_TOKEN, &["audit", "consistency", "4", "5", "--control-plane-key", &key]).await;
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr.contains("audit consistency 4 -> 5 does NOT verify") && o.stderr.contains("does not extend the head of size 4"),
        "{}",
        o.stderr
    );
    r.shutdown().await;
}
