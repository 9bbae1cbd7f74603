//! TLS and mTLS on the control plane's one port, with certificates generated here (rcgen):
//! nodes and admins with a certificate from the client CA get in; no certificate, or one from
//! another CA, is refused at the handshake; admin by client certificate. (cordonctl over
//! https is tested in its own crate, `control-plane/cordonctl`.)

mod support;

use cordon_control_plane::auth::Tokens;
use cordon_control_plane::server::Running;
use cordon_control_plane::tls::{TlsError, TlsFiles, server_config};
use cordon_core::bundle::POLICY_TYPE_URL;
use cordon_proto::admin::v1::StatusRequest;
use cordon_proto::admin::v1::policy_admin_client::PolicyAdminClient;
use cordon_proto::v1::policy_discovery_service_client::PolicyDiscoveryServiceClient;
use cordon_proto::v1::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::pki::*;
use support::server::*;
use tokio::process::Command;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A channel to the TLS server trusting `ca`, with an optional client identity.
async fn tls_channel(r: &Running, ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(c).unwrap(), std::fs::read(k).unwrap()));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", r.addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// Opens a policy stream as node `id` and returns the first response (or why there is none).
async fn first_push(channel: Channel, id: &str) -> Result<DiscoveryResponse, tonic::Status> {
    let mut client = PolicyDiscoveryServiceClient::new(channel);
    let first = DiscoveryRequest {
        node: Some(cordon_proto::v1::Node { id: id.into(), cluster: "tls".into(), ..Default::default() }),
        type_url: POLICY_TYPE_URL.into(),
        ..Default::default()
    };
    let mut rx = client.stream_policies(tokio_stream::iter(vec![first])).await?.into_inner();
    match tokio::time::timeout(PATIENCE, rx.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(tonic::Status::unavailable("stream ended")),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(tonic::Status::deadline_exceeded("no push")),
    }
}

/// A node or admin call over `identity` must fail (at connect, or at the first call when the
/// TLS 1.3 server rejects the certificate after the client considers the handshake done).
async fn refused(r: &Running, ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> String {
    let channel = match tls_channel(r, ca, identity).await {
        Err(e) => return format!("connect: {e:?}"),
        Ok(c) => c,
    };
    let mut admin = PolicyAdminClient::new(channel.clone());
    let status = admin.status(authed(StatusRequest {}, VIEW_TOKEN)).await;
    assert!(status.is_err(), "admin call must be refused without a valid client certificate");
    let push = first_push(channel, "intruder").await;
    assert!(push.is_err(), "policy stream must be refused without a valid client certificate");
    format!("{:?}", status.err())
}

#[tokio::test]
async fn mtls_accepts_clients_of_the_ca_and_refuses_the_rest() {
    let s = setup();
    let r = start_tls(&s, true, tokens()).await;
    let good = s.pki.client("envoy-1", "envoy-1.nodes.test");

    // A node with a certificate from the client CA gets the signed policy over TLS.
    let mut admin = PolicyAdminClient::new(tls_channel(&r, &s.pki.ca, Some(&good)).await.unwrap());
    let req = cordon_proto::admin::v1::ApplyRequest { source: policy_yaml("gpt-4o*"), ..Default::default() };
    admin.apply(authed(req, OPS_TOKEN)).await.unwrap();
    let push = first_push(tls_channel(&r, &s.pki.ca, Some(&good)).await.unwrap(), "envoy-1").await.unwrap();
    assert_eq!(push.version_info, "1");
    assert!(r.nodes.status("1").iter().any(|n| n.node_id == "envoy-1"));

    // No client certificate, or one from another CA: refused, and no such node ever appears.
    let why = refused(&r, &s.pki.ca, None).await;
    assert!(why.contains("CertificateRequired"), "{why}");
    let foreign = s.other.client("foreign", "envoy-1.nodes.test");
    refused(&r, &s.pki.ca, Some(&foreign)).await;
    assert!(!r.nodes.status("1").iter().any(|n| n.node_id == "intruder"));

    // Plaintext on a TLS port is not served either.
    let plain = Channel::from_shared(format!("http://{}", r.addr)).unwrap().timeout(Duration::from_secs(5)).connect().await;
    if let Ok(ch) = plain {
        assert!(PolicyAdminClient::new(ch).status(authed(StatusRequest {}, VIEW_TOKEN)).await.is_err());
    }
    r.shutdown().await;
}

#[tokio::test]
async fn tls_without_client_ca_serves_any_client_and_http_still_works() {
    let s = setup();
    let r = start_tls(&s, false, tokens()).await;
    let mut admin = PolicyAdminClient::new(tls_channel(&r, &s.pki.ca, None).await.unwrap());
    assert!(admin.status(authed(StatusRequest {}, VIEW_TOKEN)).await.is_ok());
    // A client that does not trust the server's CA refuses the server.
    assert!(
        tls_channel(&r, &s.other.ca, None).await.is_err() || {
            let ch = tls_channel(&r, &s.other.ca, None).await.unwrap();
            PolicyAdminClient::new(ch).status(authed(StatusRequest {}, VIEW_TOKEN)).await.is_err()
        }
    );
    r.shutdown().await;
}

#[tokio::test]
async fn admin_by_client_certificate() {
    let s = setup();
    let tokens =
        Tokens::parse(&format!("view viewer {VIEW_TOKEN}\nci operator cert-dns:ci.admin.test\nwatcher viewer cert-dns:watch.admin.test\n"))
            .unwrap();
    let r = start_tls(&s, true, tokens).await;
    let ci = s.pki.client("ci", "ci.admin.test");
    let watch = s.pki.client("watch", "watch.admin.test");
    let node = s.pki.client("node", "envoy-9.nodes.test");
    let apply = || cordon_proto::admin::v1::ApplyRequest { source: policy_yaml("gpt-4o*"), ..Default::default() };

    // The certificate alone authenticates, with the roles of its entry.
    let mut c = PolicyAdminClient::new(tls_channel(&r, &s.pki.ca, Some(&ci)).await.unwrap());
    let v = c.apply(tonic::Request::new(apply())).await.unwrap().into_inner();
    assert_eq!(v.version.unwrap().version, "1");
    let mut w = PolicyAdminClient::new(tls_channel(&r, &s.pki.ca, Some(&watch)).await.unwrap());
    assert!(w.status(tonic::Request::new(StatusRequest {})).await.is_ok());
    let e = w.apply(tonic::Request::new(apply())).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // A node certificate from the same CA connects but is no admin.
    let mut n = PolicyAdminClient::new(tls_channel(&r, &s.pki.ca, Some(&node)).await.unwrap());
    assert_eq!(n.status(tonic::Request::new(StatusRequest {})).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    // A bearer token takes precedence over the certificate.
    assert!(n.status(authed(StatusRequest {}, VIEW_TOKEN)).await.is_ok());

    // The admin log names the certificate's entry as the actor.
    let entries = r.service.store().log(0, 100).await.unwrap();
    assert!(entries.iter().any(|e| e.entry.actor == "ci" && e.entry.action == "apply" && e.entry.outcome == "ok"), "{entries:?}");
    assert!(entries.iter().any(|e| e.entry.actor == "watcher" && e.entry.action == "apply" && e.entry.outcome == "denied"));
    r.shutdown().await;
}

#[test]
fn bad_tls_files_are_clear_start_up_errors() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let files = |cert: &Path, key: &Path, ca: Option<&Path>| TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: ca.map(Path::to_path_buf),
    };
    let missing = dir.path().join("missing.pem");
    let e = server_config(&files(&missing, &s.server.1, None)).unwrap_err();
    assert!(matches!(e, TlsError::Read { what: "certificate", .. }), "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = server_config(&files(&junk, &s.server.1, None)).unwrap_err();
    assert!(matches!(e, TlsError::Pem { what: "certificate", .. }), "{e}");
    let e = server_config(&files(&s.server.0, &junk, None)).unwrap_err();
    assert!(matches!(e, TlsError::Pem { what: "private key", .. }), "{e}");
    let e = server_config(&files(&s.server.0, &s.server.1, Some(&junk))).unwrap_err();
    assert!(matches!(e, TlsError::Pem { what: "client CA", .. }), "{e}");
    // A key that does not belong to the certificate.
    let (_, other_key) = s.pki.client("x", "x.test");
    let e = server_config(&files(&s.server.0, &other_key, None)).unwrap_err();
    assert!(matches!(e, TlsError::Config(_)), "{e}");
    // Private key bytes never show up in an error.
    let key_text = std::fs::read_to_string(&s.server.1).unwrap();
    let e = server_config(&files(&s.server.1, &s.server.1, None)).unwrap_err().to_string();
    let body: String = key_text.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!e.contains(&body[..20]), "{e}");
}

#[tokio::test]
async fn server_binary_refuses_to_start_with_a_missing_key_file() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cordon-control-plane"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--tls-cert")
        .arg(&s.server.0)
        .arg("--tls-key")
        .arg(dir.path().join("nope.key"))
        .env_remove("CORDON_SIGNING_KEY")
        .env_remove("CORDON_ADMIN_TOKENS")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("TLS private key") && err.contains("nope.key"), "{err}");
    // Nothing was created before the check failed.
    assert!(!dir.path().join("cordon.db").exists());
    // A key without a certificate is a usage error.
    let o = Command::new(env!("CARGO_BIN_EXE_cordon-control-plane"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--tls-key")
        .arg(&s.server.1)
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-cert"));
}
