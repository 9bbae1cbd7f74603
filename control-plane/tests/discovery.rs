//! Protocol tests: a real server on 127.0.0.1:0, real tonic clients playing nodes.

mod support;

use cordon_control_plane::signing::{BundleSigner, view};
use cordon_core::bundle::{TrustedKey, verify};
use cordon_proto::admin::v1::{ApplyRequest, CreateKeyRequest, RevokeKeyRequest};
use support::server::*;

async fn apply(r: &cordon_control_plane::server::Running, model: &str) -> String {
    let o = r.service.apply("test", &policy_yaml(model), "", false).await.unwrap();
    assert!(o.changed);
    o.version.unwrap().number.to_string()
}

#[tokio::test]
async fn first_push_is_signed_and_ack_makes_the_node_synced() {
    let r = start().await;
    let v1 = apply(&r, "gpt-4o*").await;
    let mut node = Node::connect(&r, "n1", "").await;
    let resp = node.recv().await;
    assert_eq!(resp.version_info, v1);
    assert!(!resp.nonce.is_empty());
    let b = bundle(&resp);
    assert_eq!(b.version, v1);
    let signer = BundleSigner::from_seed(SEED);
    let trusted = [TrustedKey { key_id: signer.key_id().to_owned(), public_key: signer.public_key_base64() }];
    // Verified exactly as the filter verifies it (the one verifier).
    let verified = verify(&view(&b), &trusted, &|_: &str| None).unwrap();
    assert_eq!(verified.serial.to_string(), v1, "the serial is the store's version number");
    let policy = cordon_core::policy::Policy::from_json(&b.policy_json).unwrap();
    assert_eq!(policy.models[0].allow[0].as_str(), "gpt-4o*");
    let pending = wait_status(&r, "n1", |s| s.state == "STALE").await;
    assert_eq!(pending.pending_nonce, resp.nonce);
    node.ack(&resp).await;
    let st = wait_status(&r, "n1", |s| s.state == "SYNCED").await;
    assert_eq!(st.acked_version, v1);
    assert!(st.pending_nonce.is_empty());
    r.shutdown().await;
}

#[tokio::test]
async fn nack_keeps_last_good_and_is_not_resent() {
    let r = start().await;
    let v1 = apply(&r, "a").await;
    let mut node = Node::connect(&r, "n1", "").await;
    let first = node.recv().await;
    node.ack(&first).await;
    let v2 = apply(&r, "b").await;
    let second = node.recv().await;
    assert_eq!(second.version_info, v2);
    assert_ne!(second.nonce, first.nonce);
    node.nack(&second, &v1, "policy field `models[0]`: broken").await;
    let st = wait_status(&r, "n1", |s| s.state == "NACKED").await;
    assert_eq!(st.acked_version, v1);
    assert_eq!(st.last_nack_version, v2);
    assert!(st.last_nack_error.contains("broken"));
    // No redundant push: the next thing the node sees is v3, not v2 again.
    let v3 = apply(&r, "c").await;
    let third = node.recv().await;
    assert_eq!(third.version_info, v3);
    node.ack(&third).await;
    wait_status(&r, "n1", |s| s.state == "SYNCED" && s.acked_version == v3).await;
    assert_eq!(r.metrics.nacks.get(), 1);
    r.shutdown().await;
}

#[tokio::test]
async fn stale_nonce_is_ignored_and_flow_control_holds_the_next_version() {
    let r = start().await;
    let v1 = apply(&r, "a").await;
    let mut node = Node::connect(&r, "n1", "").await;
    let first = node.recv().await;
    // A new version while v1 is un-ACKed is held back (one response in flight).
    let v2 = apply(&r, "b").await;
    // An answer with a nonce the server never sent changes nothing.
    node.send(cordon_proto::v1::DiscoveryRequest { version_info: v1.clone(), response_nonce: "not-a-nonce".into(), ..Default::default() })
        .await;
    let st = wait_status(&r, "n1", |_| r.metrics.stale_nonces.get() == 1).await;
    assert_eq!(st.pending_nonce, first.nonce);
    assert_eq!(st.acked_version, "");
    // The real ACK releases v2 right away.
    node.ack(&first).await;
    let second = node.recv().await;
    assert_eq!(second.version_info, v2);
    // An ACK of the old nonce after the new response is stale too.
    node.ack(&first).await;
    node.ack(&second).await;
    let st = wait_status(&r, "n1", |s| s.state == "SYNCED").await;
    assert_eq!(st.acked_version, v2);
    assert_eq!(r.metrics.stale_nonces.get(), 2);
    r.shutdown().await;
}

#[tokio::test]
async fn reconnect_resyncs_and_a_current_node_gets_no_redundant_push() {
    let r = start().await;
    apply(&r, "a").await;
    let mut node = Node::connect(&r, "n1", "").await;
    let first = node.recv().await;
    node.ack(&first).await;
    wait_status(&r, "n1", |s| s.state == "SYNCED").await;
    drop(node);
    wait_status(&r, "n1", |s| s.state == "DISCONNECTED").await;
    // While it was away, policy moved on: on reconnect it is sent the new version.
    let v2 = apply(&r, "b").await;
    let mut node = Node::connect(&r, "n1", &first.version_info).await;
    let resp = node.recv().await;
    assert_eq!(resp.version_info, v2);
    node.ack(&resp).await;
    wait_status(&r, "n1", |s| s.state == "SYNCED" && s.acked_version == v2).await;
    drop(node);
    // Reconnecting with the current version: nothing is pushed until something changes.
    let mut node = Node::connect(&r, "n1", &v2).await;
    wait_status(&r, "n1", |s| s.connected && s.state == "SYNCED").await;
    let v3 = apply(&r, "c").await;
    assert_eq!(node.recv().await.version_info, v3, "first message after reconnect must be the new version");
    r.shutdown().await;
}

#[tokio::test]
async fn new_versions_fan_out_to_every_node() {
    let r = start().await;
    apply(&r, "a").await;
    let mut nodes = vec![];
    for i in 0..5 {
        let mut n = Node::connect(&r, &format!("n{i}"), "").await;
        let resp = n.recv().await;
        n.ack(&resp).await;
        nodes.push(n);
    }
    for n in &nodes {
        wait_status(&r, &n.id, |s| s.state == "SYNCED").await;
    }
    let v2 = apply(&r, "b").await;
    for n in &mut nodes {
        let resp = n.recv().await;
        assert_eq!(resp.version_info, v2);
        n.ack(&resp).await;
    }
    for n in &nodes {
        wait_status(&r, &n.id, |s| s.state == "SYNCED" && s.acked_version == v2).await;
    }
    assert_eq!(r.metrics.connected_nodes.get(), 5);
    r.shutdown().await;
}

#[tokio::test]
async fn node_connected_before_any_policy_gets_the_first_one() {
    let r = start().await;
    let mut node = Node::connect(&r, "early", "").await;
    wait_status(&r, "early", |s| s.connected).await;
    let v1 = apply(&r, "a").await;
    assert_eq!(node.recv().await.version_info, v1);
    r.shutdown().await;
}

#[tokio::test]
async fn first_request_without_node_id_is_refused() {
    let r = start().await;
    let mut node = Node::connect(&r, "", "").await;
    let st = node.recv_error().await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("node.id"));
    r.shutdown().await;
}

#[tokio::test]
async fn key_create_and_revoke_reach_nodes_as_new_versions() {
    let r = start().await;
    let mut admin = admin(&r).await;
    admin.apply(authed(ApplyRequest { source: policy_yaml("gpt-4o*"), ..Default::default() }, OPS_TOKEN)).await.unwrap();
    let mut node = Node::connect(&r, "n1", "").await;
    let v1 = node.recv().await;
    node.ack(&v1).await;
    let created = admin
        .create_key(authed(CreateKeyRequest { id: "k1".into(), user: "alice".into(), team: "ml".into(), ..Default::default() }, OPS_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let digest = cordon_control_plane::policy::sha256_hex(created.plaintext.as_bytes());
    let v2 = node.recv().await;
    let policy = cordon_core::policy::Policy::from_json(&bundle(&v2).policy_json).unwrap();
    let key = &policy.identity.api_keys[0];
    assert_eq!((key.id.as_str(), key.sha256.as_str()), ("k1", digest.as_str()));
    assert_eq!(key.status, cordon_core::policy::KeyStatus::Active);
    node.ack(&v2).await;
    admin.revoke_key(authed(RevokeKeyRequest { id: "k1".into() }, OPS_TOKEN)).await.unwrap();
    let v3 = node.recv().await;
    let policy = cordon_core::policy::Policy::from_json(&bundle(&v3).policy_json).unwrap();
    assert_eq!(policy.identity.api_keys[0].status, cordon_core::policy::KeyStatus::Revoked);
    r.shutdown().await;
}
