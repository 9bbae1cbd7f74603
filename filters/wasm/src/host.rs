//! The root context: reads the plugin configuration, compiles the policy once per change and
//! hands each request a snapshot of it, so a request runs under one policy from start to end.

use crate::identity::IdentityFilter;
use crate::metrics::Decisions;
use cordon_core::CompiledPolicy;
use cordon_core::config::FilterConfig;
use cordon_core::identity::jwt::TokenCache;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

/// State shared by the root context and its requests on one worker.
pub struct Shared {
    /// The active policy; `None` until one is loaded (cold start).
    pub policy: RefCell<Option<Rc<CompiledPolicy>>>,
    /// Verified JWTs, cleared whenever the policy changes.
    pub tokens: RefCell<TokenCache>,
    /// Decision counters.
    pub decisions: Decisions,
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
    role: Option<Role>,
}

#[derive(Clone, Copy)]
enum Role {
    Identity,
}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

fn root_id() -> String {
    proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default()
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let id = root_id();
        let role = match id.as_str() {
            crate::ROOT_IDENTITY | "" => Role::Identity,
            other => {
                log(LogLevel::Critical, &format!("unknown root_id '{other}'; expected '{}'", crate::ROOT_IDENTITY));
                return false;
            }
        };
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
                for name in p.missing_secrets() {
                    log(
                        LogLevel::Error,
                        &format!(
                            "runtime secret '{name}' is not set; requests to its upstream get 503 upstream_credential_unavailable"
                        ),
                    );
                }
                log(LogLevel::Info, &format!("{id} loaded policy {}", &p.digest()[..16]));
            }
            None => log(LogLevel::Warn, "no policy configured; refusing requests with 503 policy_unavailable until one arrives"),
        }
        match &self.shared {
            Some(shared) => {
                *shared.policy.borrow_mut() = policy;
                shared.tokens.borrow_mut().clear();
            }
            None => {
                self.shared = Some(Rc::new(Shared {
                    policy: RefCell::new(policy),
                    tokens: RefCell::new(TokenCache::new(config.token_cache_size)),
                    decisions: Decisions::define(),
                }))
            }
        }
        self.role = Some(role);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        match self.role? {
            Role::Identity => Some(Box::new(IdentityFilter::new(shared))),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
