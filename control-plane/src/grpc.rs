//! The admin API as gRPC (`cordon.admin.v1.PolicyAdmin`).

use crate::admin::{Admin, AdminError};
use crate::auth::bearer;
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
        Ok(Response::new(self.0.apply(t.as_deref(), request.into_inner()).await?))
    }
    async fn validate(&self, request: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.validate(t.as_deref(), request.into_inner()).await?))
    }
    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.diff(t.as_deref(), request.into_inner()).await?))
    }
    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.history(t.as_deref(), request.into_inner()).await?))
    }
    async fn rollback(&self, request: Request<RollbackRequest>) -> Result<Response<ApplyResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.rollback(t.as_deref(), request.into_inner()).await?))
    }
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.status(t.as_deref(), request.into_inner()).await?))
    }
    async fn create_key(&self, request: Request<CreateKeyRequest>) -> Result<Response<CreateKeyResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.create_key(t.as_deref(), request.into_inner()).await?))
    }
    async fn revoke_key(&self, request: Request<RevokeKeyRequest>) -> Result<Response<RevokeKeyResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.revoke_key(t.as_deref(), request.into_inner()).await?))
    }
    async fn list_keys(&self, request: Request<ListKeysRequest>) -> Result<Response<ListKeysResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.list_keys(t.as_deref(), request.into_inner()).await?))
    }
    async fn admin_log(&self, request: Request<AdminLogRequest>) -> Result<Response<AdminLogResponse>, Status> {
        let t = token(&request);
        Ok(Response::new(self.0.admin_log(t.as_deref(), request.into_inner()).await?))
    }
}
