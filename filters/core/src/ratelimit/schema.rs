//! The `rate_limits` and `token_estimate` sections of a policy, as written.

use crate::glob::Glob;
use serde::{Deserialize, Serialize};

/// One limit: whom it applies to, what it counts per which key, and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Unique name: shown in refusals (`x-cordon-limit`) and metrics; `[a-z0-9_-]`, ≤ 64 bytes.
    pub name: String,
    /// Which requests the limit applies to; unset fields match anything.
    #[serde(default, rename = "match")]
    pub selector: LimitMatch,
    /// The fields whose values key the counters (one counter per distinct combination).
    #[serde(default = "default_by")]
    pub by: Vec<KeyField>,
    /// Requests per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Quota>,
    /// LLM tokens per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenQuota>,
    /// LLM tokens per calendar day, week or month (UTC), reset at the boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Exchanges (streamed or not) in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<Concurrency>,
    /// What a token limit does when a streamed completion runs past it.
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// Counters kept for this limit (bounded state); see the limits reference for eviction.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Where the counters live: in this Envoy (`local`) or in the rate-limit service (`fleet`).
    #[serde(default, skip_serializing_if = "Scope::is_local")]
    pub scope: Scope,
}

/// Where a limit's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In this Envoy's shared memory, shared by its workers.
    #[default]
    Local,
    /// In the rate-limit service (`rate_limit_service`), shared by every Envoy that asks it.
    Fleet,
}

impl Scope {
    /// Whether this is the default, `local`.
    pub fn is_local(&self) -> bool {
        *self == Scope::Local
    }
}

/// The rate-limit service fleet-wide limits ask (Envoy's RLS v3 API over gRPC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitService {
    /// The Envoy cluster (HTTP/2) of the service; the control plane's by default.
    #[serde(default = "default_rls_cluster")]
    pub cluster: String,
    /// The RLS `domain` Cordon's descriptors are sent under.
    #[serde(default = "default_rls_domain")]
    pub domain: String,
    /// How long a request waits for the answer before `on_unavailable` applies.
    #[serde(default = "default_rls_timeout")]
    pub timeout_ms: u64,
    /// What a request gets when the service does not answer in time or fails.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// Whether the service is Cordon's control plane (which also releases unused token
    /// reservations) or any other RLS (standard API only).
    #[serde(default)]
    pub protocol: RlsProtocol,
}

fn default_rls_cluster() -> String {
    "cordon_control_plane".into()
}

fn default_rls_domain() -> String {
    "cordon".into()
}

fn default_rls_timeout() -> u64 {
    250
}

/// What happens to a request when the rate-limit service cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Refuse with 503 `rate_limit_unavailable` (fail closed).
    #[default]
    Deny,
    /// Let it through unmetered by its fleet limits: counted, logged, flagged in the audit record.
    Allow,
}

/// Which dialect of the RLS API the service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RlsProtocol {
    /// Cordon's control plane: the standard API plus a `cordon_op` descriptor entry that
    /// releases unused token reservations and debits overshoots unconditionally.
    #[default]
    Cordon,
    /// Any RLS (envoyproxy/ratelimit, Limitador): overshoots are debited as ordinary hits and
    /// unused reservations stay counted until the window ends.
    Standard,
}

fn default_by() -> Vec<KeyField> {
    vec![KeyField::Key]
}

fn default_slots() -> u32 {
    4096
}

/// Selects requests by principal fields, API key id and model; globs as in model allowlists.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitMatch {
    /// User pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Glob>,
    /// Team pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Glob>,
    /// App pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Glob>,
    /// API key id pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Glob>,
    /// Model pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Glob>,
}

impl LimitMatch {
    /// Whether a caller with these values is selected: every set pattern must match a present
    /// value (a caller without a team never matches a `team` pattern).
    pub fn matches(&self, user: Option<&str>, team: Option<&str>, app: Option<&str>, key: Option<&str>, model: Option<&str>) -> bool {
        let field = |pat: &Option<Glob>, val: Option<&str>| pat.as_ref().is_none_or(|g| val.is_some_and(|v| g.matches(v)));
        field(&self.user, user) && field(&self.team, team) && field(&self.app, app) && field(&self.key, key) && field(&self.model, model)
    }
}

/// A field a counter is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The API key id (requests without one share the empty key).
    Key,
    /// The principal's user.
    User,
    /// The principal's team.
    Team,
    /// The principal's app.
    App,
    /// The requested model.
    Model,
}

impl KeyField {
    /// The name used in policy and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyField::Key => "key",
            KeyField::User => "user",
            KeyField::Team => "team",
            KeyField::App => "app",
            KeyField::Model => "model",
        }
    }
}

/// A window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl Per {
    /// The window in nanoseconds.
    pub fn nanos(self) -> u64 {
        const S: u64 = 1_000_000_000;
        match self {
            Per::Second => S,
            Per::Minute => 60 * S,
            Per::Hour => 3_600 * S,
            Per::Day => 86_400 * S,
        }
    }
}

/// `limit` requests per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Units per window (> 0).
    pub limit: u64,
    /// The window.
    pub per: Per,
}

/// Which tokens a token limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCount {
    /// Prompt (input) tokens.
    Prompt,
    /// Completion (output) tokens.
    Completion,
    /// Both.
    #[default]
    Total,
}

/// `limit` tokens per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuota {
    /// Tokens per window (> 0).
    pub limit: u64,
    /// The window.
    pub per: Per,
    /// Which tokens count.
    #[serde(default)]
    pub count: TokenCount,
}

/// At most `limit` exchanges in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Exchanges in flight at once (1..=1048575).
    pub limit: u64,
    /// Seconds after which a counter nobody changed counts as empty: bounds how long an
    /// exchange whose end was lost (a VM torn down mid-stream) can hold its place.
    #[serde(default = "default_stale_after")]
    pub stale_after_s: u64,
}

fn default_stale_after() -> u64 {
    900
}

/// `tokens` per calendar window: a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Tokens per window (> 0).
    pub tokens: u64,
    /// The calendar window.
    pub per: BudgetPer,
    /// Which tokens count.
    #[serde(default)]
    pub count: TokenCount,
}

impl From<BudgetPer> for super::window::Calendar {
    fn from(per: BudgetPer) -> Self {
        match per {
            BudgetPer::Day => Self::Day,
            BudgetPer::Week => Self::Week,
            BudgetPer::Month => Self::Month,
        }
    }
}

/// A budget's calendar window (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPer {
    /// Midnight to midnight.
    Day,
    /// Monday to Monday (ISO weeks).
    Week,
    /// The 1st to the 1st.
    Month,
}

/// What a token limit does to a stream that runs past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Let the stream finish; the overshoot is debited and refuses the next requests.
    #[default]
    Refuse,
    /// End the stream cleanly once the limit is reached: the text so far, one error event in
    /// the provider's format, end of stream.
    Cut,
}

/// How prompt and completion tokens are estimated before the model reports usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEstimate {
    /// Bytes of request body per prompt token (conservative: JSON syntax counts as text).
    #[serde(default = "default_bytes_per_token")]
    pub bytes_per_token: f64,
    /// Per model family overrides, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<FamilyEstimate>,
    /// Completion tokens reserved when the request sets no `max_tokens`/`max_output_tokens`.
    #[serde(default = "default_completion")]
    pub default_completion_tokens: u64,
}

/// An override for models matching `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyEstimate {
    /// Model pattern.
    pub model: Glob,
    /// Bytes per token for these models.
    pub bytes_per_token: f64,
}

fn default_bytes_per_token() -> f64 {
    4.0
}

fn default_completion() -> u64 {
    1024
}

impl Default for TokenEstimate {
    fn default() -> Self {
        Self { bytes_per_token: default_bytes_per_token(), families: Vec::new(), default_completion_tokens: default_completion() }
    }
}
