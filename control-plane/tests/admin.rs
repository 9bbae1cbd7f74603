//! Admin API: roles, the admin log, JSON over HTTP on the gRPC port, metrics, validation.

mod support;

use cordon_proto::admin::v1::*;
use support::server::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 client: enough for JSON admin calls and /metrics.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn roles_are_enforced_and_every_call_is_logged() {
    let r = start().await;
    let mut a = admin(&r).await;
    let apply = || ApplyRequest { source: policy_yaml("a"), ..Default::default() };
    let anon = a.apply(tonic::Request::new(apply())).await.unwrap_err();
    assert_eq!(anon.code(), tonic::Code::Unauthenticated);
    let viewer = a.apply(authed(apply(), VIEW_TOKEN)).await.unwrap_err();
    assert_eq!(viewer.code(), tonic::Code::PermissionDenied);
    // A viewer may dry-run and read.
    let dry = a.apply(authed(ApplyRequest { dry_run: true, ..apply() }, VIEW_TOKEN)).await.unwrap().into_inner();
    assert!(dry.dry_run && dry.changed && dry.version.is_none());
    assert!(r.service.current().is_none(), "a dry run stores and pushes nothing");
    let ok = a.apply(authed(apply(), OPS_TOKEN)).await.unwrap().into_inner();
    assert_eq!(ok.version.unwrap().number, 1);
    let same = a.apply(authed(apply(), OPS_TOKEN)).await.unwrap().into_inner();
    assert!(!same.changed, "re-applying the same policy creates no version");
    // Only auditors read the log.
    assert_eq!(a.admin_log(authed(AdminLogRequest::default(), OPS_TOKEN)).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let log = a.admin_log(authed(AdminLogRequest::default(), AUDIT_TOKEN)).await.unwrap().into_inner().entries;
    let summary: Vec<(String, String, String)> = log.iter().map(|e| (e.actor.clone(), e.action.clone(), e.outcome.clone())).collect();
    assert_eq!(
        summary[..5],
        [
            ("anonymous".into(), "apply".into(), "denied".into()),
            ("view".into(), "apply".into(), "denied".into()),
            ("view".into(), "apply --dry-run".into(), "ok".into()),
            ("ops".into(), "apply".into(), "ok".into()),
            ("ops".into(), "apply".into(), "ok".into()),
        ]
    );
    assert_eq!(log[5].outcome, "denied");
    r.shutdown().await;
}

#[tokio::test]
async fn invalid_policy_is_refused_with_line_column_or_field() {
    let r = start().await;
    let mut a = admin(&r).await;
    let v = a
        .validate(authed(ValidateRequest { source: "models:\n  - allow: [a]\n    alow: [b]\n".into() }, VIEW_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    assert_eq!(v.errors[0].line, 3);
    let v = a.validate(authed(ValidateRequest { source: "models:\n  - allow: []\n".into() }, VIEW_TOKEN)).await.unwrap().into_inner();
    assert_eq!(v.errors[0].path, "models[0].allow");
    let err =
        a.apply(authed(ApplyRequest { source: "models:\n  - allow: []\n".into(), ..Default::default() }, OPS_TOKEN)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("models[0].allow"), "{}", err.message());
    assert!(r.service.current().is_none(), "nothing invalid is ever served");
    r.shutdown().await;
}

#[tokio::test]
async fn history_diff_and_rollback() {
    let r = start().await;
    let mut a = admin(&r).await;
    for m in ["a", "b"] {
        a.apply(authed(ApplyRequest { source: policy_yaml(m), message: format!("to {m}"), ..Default::default() }, OPS_TOKEN))
            .await
            .unwrap();
    }
    let d = a.diff(authed(DiffRequest { source: policy_yaml("c") }, VIEW_TOKEN)).await.unwrap().into_inner();
    assert_eq!(d.base_version, 2);
    assert!(d.diff.contains("-        \"b\"") && d.diff.contains("+        \"c\""), "{}", d.diff);
    let rb = a.rollback(authed(RollbackRequest { to_version: 1, message: "oops".into() }, OPS_TOKEN)).await.unwrap().into_inner();
    let v3 = rb.version.unwrap();
    assert_eq!((v3.number, v3.reason.as_str()), (3, "rollback to 1"));
    let h = a.history(authed(HistoryRequest { limit: 10, include_diff: true }, VIEW_TOKEN)).await.unwrap().into_inner().versions;
    assert_eq!(h.iter().map(|v| v.number).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(h[0].sha256, h[2].sha256, "rollback restores the same content");
    assert!(h[0].diff.contains("+        \"a\""));
    assert_eq!(h[1].message, "to b");
    let missing = a.rollback(authed(RollbackRequest { to_version: 99, ..Default::default() }, OPS_TOKEN)).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    r.shutdown().await;
}

#[tokio::test]
async fn json_over_http_and_metrics_share_the_grpc_port() {
    let r = start().await;
    let body = serde_json::json!({ "source": policy_yaml("gpt-4o*") }).to_string();
    let (code, resp) = http(r.addr, "POST", "/v1/admin/apply", Some(OPS_TOKEN), &body).await;
    assert_eq!(code, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["version"]["number"], 1);
    let (code, _) = http(r.addr, "POST", "/v1/admin/apply", Some(VIEW_TOKEN), &body).await;
    assert_eq!(code, 403);
    let (code, _) = http(r.addr, "POST", "/v1/admin/status", None, "").await;
    assert_eq!(code, 401);
    let (code, resp) = http(r.addr, "POST", "/v1/admin/validate", Some(VIEW_TOKEN), r#"{"source":"models: [\n"}"#).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["errors"][0]["line"].as_u64().unwrap() >= 1);
    let mut node = Node::connect(&r, "n1", "").await;
    let resp = node.recv().await;
    node.ack(&resp).await;
    wait_status(&r, "n1", |s| s.state == "SYNCED").await;
    let (code, resp) = http(r.addr, "POST", "/v1/admin/status", Some(VIEW_TOKEN), "").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["nodes"][0]["state"], "SYNCED");
    let (code, metrics) = http(r.addr, "GET", "/metrics", None, "").await;
    assert_eq!(code, 200);
    for needle in [
        "cordon_cp_connected_nodes 1",
        "cordon_cp_node_policy_version{node=\"n1\"} 1",
        "cordon_cp_push_latency_seconds_count 1",
        "cordon_cp_nacks_total 0",
    ] {
        assert!(metrics.contains(needle), "missing `{needle}` in:\n{metrics}");
    }
    r.shutdown().await;
}

#[tokio::test]
async fn grpc_health_is_served() {
    let r = start().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel(&r).await);
    let resp =
        h.check(tonic_health::pb::HealthCheckRequest { service: "cordon.v1.PolicyDiscoveryService".into() }).await.unwrap().into_inner();
    assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    r.shutdown().await;
}
