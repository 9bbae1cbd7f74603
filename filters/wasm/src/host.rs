//! The root context: picks the role from `root_id`, and for the HTTP roles holds the policy in
//! force on this worker. The policy comes from the control plane (via the policy-stream singleton
//! and shared data) when one has been pushed, else from the static plugin configuration.
//! Each request takes a snapshot, so it runs under one policy from start to end.

use crate::identity::IdentityFilter;
use crate::metrics::Decisions;
use crate::policy_stream::PolicyStreamService;
use crate::redact::RedactFilter;
use crate::shared_policy;
use cordon_core::config::FilterConfig;
use cordon_core::identity::jwt::TokenCache;
use cordon_core::policy::Policy;
use cordon_core::{CompiledPolicy, Refusal};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// State shared by the root context and its requests on one worker.
pub struct Shared {
    /// The active policy; `None` until one is loaded (cold start).
    pub policy: RefCell<Option<Rc<CompiledPolicy>>>,
    /// The control-plane version in force, if the policy came from the control plane.
    pub pushed_version: RefCell<Option<String>>,
    /// The policy in force as the audit record names it: version and SHA-256 (bundle hash for
    /// a pushed policy; the document's digest and version `static` for a static one).
    pub policy_ref: RefCell<(String, String)>,
    /// Verified JWTs, cleared whenever the policy changes.
    pub tokens: RefCell<TokenCache>,
    /// Decision counters.
    pub decisions: Decisions,
    /// Redaction outcome counter ids, defined on first use.
    redaction_metrics: RefCell<HashMap<String, u32>>,
    /// The root context's id: calls that must outlive a request are made on its behalf.
    pub root_context: u32,
}

impl Shared {
    fn new(policy: Option<Rc<CompiledPolicy>>, token_cache_size: usize, root_context: u32) -> Self {
        let policy_ref = static_ref(policy.as_deref());
        let shared = Self {
            policy_ref: RefCell::new(policy_ref),
            policy: RefCell::new(policy),
            pushed_version: RefCell::new(None),
            tokens: RefCell::new(TokenCache::new(token_cache_size)),
            decisions: Decisions::define(),
            redaction_metrics: RefCell::new(HashMap::new()),
            root_context,
        };
        shared.publish_holdback();
        shared
    }

    /// Counts one redaction outcome as `cordon_redaction_<direction>_<detector>_<action>`.
    pub fn count_redaction(&self, direction: &str, detector: &str, action: &str) {
        let name = format!("cordon_redaction_{direction}_{detector}_{action}");
        let mut ids = self.redaction_metrics.borrow_mut();
        let id = match ids.get(&name) {
            Some(id) => *id,
            None => match proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, &name) {
                Ok(id) => *ids.entry(name).or_insert(id),
                Err(_) => return,
            },
        };
        let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
    }

    /// Exposes the redaction holdback bound of the policy in force as a gauge.
    fn publish_holdback(&self) {
        let bound = self.policy.borrow().as_ref().and_then(|p| p.redaction().engine().ok().map(|e| e.holdback_bound()));
        if let (Some(bound), Ok(id)) =
            (bound, proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Gauge, "cordon_redaction_holdback_bound_bytes"))
        {
            let _ = proxy_wasm::hostcalls::record_metric(id, bound as u64);
        }
    }

    /// Adopts a newer control-plane policy if the singleton published one. A per-request check
    /// of a few bytes: a revoked key is refused on the very next request after the push.
    fn refresh(&self) {
        let Some(version) = shared_policy::version() else { return };
        if self.pushed_version.borrow().as_deref() == Some(version.as_str()) {
            return;
        }
        let Some(published) = shared_policy::bundle() else { return };
        let compiled =
            Policy::from_json(&published.policy_json).and_then(|p| CompiledPolicy::compile(&p, &|name: &str| std::env::var(name).ok()));
        match compiled {
            Ok(policy) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "worker adopted control-plane policy version {} ({})",
                        published.version,
                        published.sha256.get(..16).unwrap_or(&published.sha256)
                    ),
                );
                prepare_counters(&policy);
                *self.policy_ref.borrow_mut() = (published.version.clone(), published.sha256.clone());
                *self.policy.borrow_mut() = Some(Rc::new(policy));
                self.tokens.borrow_mut().clear();
                self.publish_holdback();
            }
            // The singleton compiled the same bytes; this only happens if the runtime differs.
            Err(e) => log(
                LogLevel::Error,
                &format!("worker could not compile pushed version {}: {e}; keeping the previous policy", published.version),
            ),
        }
        *self.pushed_version.borrow_mut() = Some(published.version);
    }
}

fn static_ref(policy: Option<&CompiledPolicy>) -> (String, String) {
    ("static".to_owned(), policy.map(|p| p.digest().to_owned()).unwrap_or_default())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HttpRole {
    Identity,
    Redact,
    Gateway,
}

enum Role {
    Unconfigured,
    Http(HttpRole, Rc<Shared>),
    PolicyStream(Box<PolicyStreamService>),
}

/// The module's root context for every role.
pub struct Root {
    role: Role,
    context_id: u32,
}

impl Root {
    /// The root context `context_id`, unconfigured until `on_configure`.
    pub fn new(context_id: u32) -> Self {
        Self { role: Role::Unconfigured, context_id }
    }
}

/// Sends `refusal` as the local reply: its status, the OpenAI-shaped body, `x-cordon-error`
/// and any headers of its own (`retry-after`, `x-cordon-limit`). Counted by the caller.
pub fn send_refusal(refusal: &Refusal) {
    let own = refusal.headers();
    let mut headers = vec![("content-type", "application/json"), ("x-cordon-error", refusal.code())];
    headers.extend(own.iter().map(|(k, v)| (*k, v.as_str())));
    let _ = proxy_wasm::hostcalls::send_http_response(u32::from(refusal.status()), headers, Some(&refusal.body()));
}

/// Creates the rate limiter's counter tables in shared data when a worker adopts a policy.
fn prepare_counters(policy: &CompiledPolicy) {
    if let Err(e) = policy.rate_limits().prepare(&crate::shared_counters::SharedData) {
        log(LogLevel::Error, &format!("rate limits: could not create counters: {e}"));
    }
}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

fn root_id() -> String {
    proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default()
}

impl Root {
    fn configure_http(&mut self, role: HttpRole) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config = match FilterConfig::from_json(&raw) {
            Ok(c) => c,
            Err(e) => {
                // Returning false makes Envoy reject this configuration and keep the previous one.
                log(LogLevel::Critical, &format!("invalid plugin configuration: {e}"));
                return false;
            }
        };
        let policy = match &config.policy {
            None => None,
            Some(p) => match CompiledPolicy::compile(p, &|name: &str| std::env::var(name).ok()) {
                Ok(c) => Some(Rc::new(c)),
                Err(e) => {
                    log(LogLevel::Critical, &format!("invalid policy: {e}"));
                    return false;
                }
            },
        };
        match &policy {
            Some(p) => {
                prepare_counters(p);
                for name in p.missing_secrets() {
                    log(
                        LogLevel::Error,
                        &format!("runtime secret '{name}' is not set; requests to its upstream get 503 upstream_credential_unavailable"),
                    );
                }
                log(LogLevel::Info, &format!("{} loaded static policy {}", root_id(), p.digest().get(..16).unwrap_or_default()));
            }
            None => log(LogLevel::Info, "no static policy; waiting for the control plane (requests get 503 policy_unavailable until then)"),
        }
        match &self.role {
            Role::Http(_, shared) => {
                // A reconfiguration: the static policy changes, a pushed one still wins below.
                *shared.policy_ref.borrow_mut() = static_ref(policy.as_deref());
                *shared.policy.borrow_mut() = policy;
                *shared.pushed_version.borrow_mut() = None;
                shared.tokens.borrow_mut().clear();
                shared.publish_holdback();
                self.role = Role::Http(role, shared.clone());
            }
            _ => self.role = Role::Http(role, Rc::new(Shared::new(policy, config.token_cache_size, self.context_id))),
        }
        true
    }
}

impl Context for Root {
    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        if let Role::PolicyStream(s) = &mut self.role {
            s.on_grpc_stream_message(token_id, message_size);
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        if let Role::PolicyStream(s) = &mut self.role {
            s.on_grpc_stream_close(token_id, status_code);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        match root_id().as_str() {
            crate::ROOT_IDENTITY | "" => self.configure_http(HttpRole::Identity),
            crate::ROOT_REDACT => self.configure_http(HttpRole::Redact),
            crate::ROOT_GATEWAY => self.configure_http(HttpRole::Gateway),
            crate::ROOT_POLICY_STREAM => {
                let mut service = Box::<PolicyStreamService>::default();
                let ok = service.on_configure(size);
                self.role = Role::PolicyStream(service);
                ok
            }
            other => {
                log(
                    LogLevel::Critical,
                    &format!(
                        "unknown root_id '{other}'; expected '{}', '{}', '{}' or '{}'",
                        crate::ROOT_IDENTITY,
                        crate::ROOT_REDACT,
                        crate::ROOT_GATEWAY,
                        crate::ROOT_POLICY_STREAM
                    ),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Role::PolicyStream(s) = &mut self.role {
            s.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Role::PolicyStream(s) = &mut self.role {
            s.on_queue_ready(queue_id);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.role {
            Role::Http(role, shared) => {
                shared.refresh();
                match role {
                    HttpRole::Identity => Some(Box::new(IdentityFilter::new(shared.clone(), context_id))),
                    HttpRole::Redact => Some(Box::new(RedactFilter::new(shared.clone()))),
                    HttpRole::Gateway => Some(Box::new(crate::gateway::GatewayFilter::new(shared.clone(), context_id))),
                }
            }
            _ => None,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.role {
            Role::PolicyStream(_) => None,
            _ => Some(ContextType::HttpContext),
        }
    }
}
