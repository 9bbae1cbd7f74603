//! The admin API as gRPC (`cordon.admin.v1.PolicyAdmin`).

use crate::admin::{Admin, AdminError};
use crate::auth::{Credentials, bearer};
use crate::tls::PeerCertificate;
use cordon_proto::admin::v1::policy_admin_server::PolicyAdmin;
use cordon_proto::admin::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        let msg = e.to_string();
        match e {
            AdminError::Unauthenticated => Status::unauthenticated(msg),
            AdminError::Forbidden { .. } => Status::permission_denied(msg),
            AdminError::Invalid { .. } => Status::invalid_argument(msg),
            AdminError::NotFound(_) => Status::not_found(msg),
            AdminError::Conflict(_) => Status::already_exists(msg),
            AdminError::Internal(_) => Status::internal(msg),
        }
    }
}

/// gRPC adapter over [`Admin`].
pub struct AdminGrpc(pub Arc<Admin>);

fn token<T>(r: &Request<T>) -> Option<String> {
    bearer(r.metadata().get("authorization").and_then(|v| v.to_str().ok())).map(str::to_string)
}

#[tonic::async_trait]
impl PolicyAdmin for AdminGrpc {
    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.apply(who, request.into_inner()).await?))
    }
    async fn validate(&self, request: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.validate(who, request.into_inner()).await?))
    }
    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.diff(who, request.into_inner()).await?))
    }
    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.history(who, request.into_inner()).await?))
    }
    async fn rollback(&self, request: Request<RollbackRequest>) -> Result<Response<ApplyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.rollback(who, request.into_inner()).await?))
    }
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.status(who, request.into_inner()).await?))
    }
    async fn create_key(&self, request: Request<CreateKeyRequest>) -> Result<Response<CreateKeyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.create_key(who, request.into_inner()).await?))
    }
    async fn revoke_key(&self, request: Request<RevokeKeyRequest>) -> Result<Response<RevokeKeyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.revoke_key(who, request.into_inner()).await?))
    }
    async fn list_keys(&self, request: Request<ListKeysRequest>) -> Result<Response<ListKeysResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.list_keys(who, request.into_inner()).await?))
    }
    async fn admin_log(&self, request: Request<AdminLogRequest>) -> Result<Response<AdminLogResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.admin_log(who, request.into_inner()).await?))
    }
    async fn register_node_key(&self, request: Request<RegisterNodeKeyRequest>) -> Result<Response<RegisterNodeKeyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.register_node_key(who, request.into_inner()).await?))
    }
    async fn revoke_node_key(&self, request: Request<RevokeNodeKeyRequest>) -> Result<Response<RevokeNodeKeyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.revoke_node_key(who, request.into_inner()).await?))
    }
    async fn list_node_keys(&self, request: Request<ListNodeKeysRequest>) -> Result<Response<ListNodeKeysResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.list_node_keys(who, request.into_inner()).await?))
    }
    async fn audit_nodes(&self, request: Request<AuditNodesRequest>) -> Result<Response<AuditNodesResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_nodes(who, request.into_inner()).await?))
    }
    async fn audit_export(&self, request: Request<AuditExportRequest>) -> Result<Response<AuditExportResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_export(who, request.into_inner()).await?))
    }
    async fn audit_verify(&self, request: Request<AuditVerifyRequest>) -> Result<Response<AuditVerifyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_verify(who, request.into_inner()).await?))
    }
    async fn audit_prove(&self, request: Request<AuditProveRequest>) -> Result<Response<AuditProveResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_prove(who, request.into_inner()).await?))
    }
    async fn audit_consistency(&self, request: Request<AuditConsistencyRequest>) -> Result<Response<AuditConsistencyResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_consistency(who, request.into_inner()).await?))
    }
    async fn audit_retain(&self, request: Request<AuditRetainRequest>) -> Result<Response<AuditRetainResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_retain(who, request.into_inner()).await?))
    }
    async fn budgets(&self, request: Request<BudgetsRequest>) -> Result<Response<BudgetsResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.budgets(who, request.into_inner()).await?))
    }
    async fn usage(&self, request: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.usage(who, request.into_inner()).await?))
    }
    async fn audit_query(&self, request: Request<AuditQueryRequest>) -> Result<Response<AuditQueryResponse>, Status> {
        let t = token(&request);
        let cert = request.extensions().get::<PeerCertificate>().cloned();
        let who = Credentials { token: t.as_deref(), cert: cert.as_ref() };
        Ok(Response::new(self.0.audit_query(who, request.into_inner()).await?))
    }
}
