//! One request's metering, host-free: admission under every matching limit with a token
//! reservation, the `x-ratelimit-*` headers, usage read from the response (JSON or stream),
//! the mid-stream cut-off, and reconciliation when the exchange ends (or is aborted).
//!
//! A stream is rewritten only when it must be: to cut it at a budget, or to remove the usage
//! chunk Cordon asked an OpenAI chat stream for (`stream_options.include_usage`) when the client
//! did not. Otherwise every chunk passes untouched and is only read. The role sits before
//! `cordon.redact` in the chain, so on the response path it sees redaction's output: a cut can
//! never release text redaction still holds back.

use super::fleet::{FleetCheck, FleetOutcome, FleetTaken, RlsRequest, RlsResponse};
use super::usage::{self, EventKind, Piece, Reading, SharedReading, StreamUsage};
use super::{Admission, Caller, CompiledLimits, LimitKind, Reservation, Usage};
use crate::redaction::{sse_format, stream_error_event};
use crate::refusal::Refusal;
use cordon_redact::sse::{SseEvent, SseFramer};
use cordon_redact::{SseError, SseFormat};
use serde_json::Value;

use super::store::CasStore;

/// Largest non-streamed response copied to read its usage; a larger one is counted by estimate.
const MAX_JSON_USAGE_BYTES: usize = 4 << 20;
/// Largest single SSE event followed; a larger one stops the following (the stream passes on).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// What the adapter does with a response chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkStep {
    /// Pass the chunk as it is.
    Continue,
    /// Replace the chunk with these bytes.
    Replace(Vec<u8>),
}

enum Watch {
    /// Nothing to read (no token limit, an error status, not a body we understand).
    Nothing,
    /// A JSON body, copied as it passes, for its `usage`.
    Json(Vec<u8>),
    /// An SSE stream, followed event by event.
    Stream(Box<Follow>),
    /// The stream was cut: whatever else arrives is dropped.
    Cut,
}

struct Follow {
    framer: SseFramer,
    usage: StreamUsage,
    /// Bytes read but not yet emitted (only while rewriting).
    unemitted: Vec<u8>,
}

/// One event of a followed chunk: framed here, or passed by the combined role's redaction
/// with its usage already read in redaction's scan.
enum Followed<'c> {
    Framed(SseEvent),
    Read(&'c [u8], Reading),
}

/// An admitted exchange and, if Cordon changed it, the request body to send instead.
pub type Begun = (Exchange, Option<Vec<u8>>);

/// The metering of one admitted request.
pub struct Exchange {
    admission: Admission,
    reservation: Reservation,
    format: Option<SseFormat>,
    budget: Option<u64>,
    cut_limit: String,
    cut_kind: LimitKind,
    strip_usage_chunk: bool,
    watch: Watch,
    settled: Option<Usage>,
    tokens: bool,
    /// The fleet limits' call, until its answer arrives.
    fleet_check: Option<FleetCheck>,
    /// The fleet limits that admitted the request (settled at the end).
    fleet_taken: Vec<FleetTaken>,
}

impl Exchange {
    /// Admits a request whose `model` is allowed, reserving its estimated tokens. `Ok(None)`
    /// when no limit matches (nothing to meter). The second value is a rewritten body when
    /// Cordon asks an OpenAI chat stream for its usage chunk (fix `content-length`).
    pub fn begin(
        limits: &CompiledLimits,
        who: &Caller<'_>,
        path: &str,
        body: &[u8],
        store: &dyn CasStore,
        now: u64,
    ) -> Result<Option<Begun>, Refusal> {
        if limits.is_empty() {
            return Ok(None);
        }
        let reservation = limits.estimate(who.model, body);
        let tokens = limits.counts_tokens(who);
        let admission = limits.admit(who, &reservation, store, now)?;
        let fleet_check = limits.fleet_check(who, &reservation);
        if admission.taken.is_empty() && fleet_check.is_none() {
            return Ok(None);
        }
        let format = sse_format(path);
        let mut rewritten = None;
        let mut strip_usage_chunk = false;
        if tokens && format == Some(SseFormat::OpenAiChat) {
            rewritten = ask_for_usage(body);
            strip_usage_chunk = rewritten.is_some();
        }
        let mut exchange = Exchange {
            admission,
            reservation,
            format,
            budget: None,
            cut_limit: String::new(),
            cut_kind: LimitKind::Tokens,
            strip_usage_chunk,
            watch: Watch::Nothing,
            settled: None,
            tokens,
            fleet_check,
            fleet_taken: Vec::new(),
        };
        exchange.set_cut_budget(limits);
        Ok(Some((exchange, rewritten)))
    }

    /// The smallest stream budget over the `cut` limits that admitted (local and fleet).
    fn set_cut_budget(&mut self, limits: &CompiledLimits) {
        let local = self.admission.cut_budget(limits, &self.reservation);
        let fleet = self.fleet_taken.iter().filter_map(|t| {
            let l = limits.limits.get(t.limit)?;
            let super::Counts::Tokens { count, cut: true } = l.counts else { return None };
            (count != super::schema::TokenCount::Prompt)
                .then(|| (self.reservation.completion.saturating_add(t.remaining), l.name.clone(), LimitKind::Tokens))
        });
        if let Some((b, name, kind)) = local.into_iter().chain(fleet).min_by_key(|(b, _, _)| *b) {
            (self.budget, self.cut_limit, self.cut_kind) = (Some(b), name, kind);
        }
    }

    /// The `ShouldRateLimit` call the fleet limits need before the request may go on; `None`
    /// when no fleet limit matched or it was answered already.
    pub fn fleet_request(&self) -> Option<&RlsRequest> {
        self.fleet_check.as_ref().map(FleetCheck::request)
    }

    /// The service's answer (or why there is none): admitted, failed open, or refused — in
    /// which case the local reservations were given back and nothing is left to settle.
    pub fn fleet_answer(
        &mut self,
        limits: &CompiledLimits,
        answer: Result<RlsResponse, String>,
        store: &dyn CasStore,
        now: u64,
    ) -> Result<FleetOutcome, Refusal> {
        let Some(check) = self.fleet_check.take() else { return Ok(FleetOutcome::Admitted) };
        match limits.fleet_judge(check, answer, &mut self.admission.headers, now) {
            Ok((taken, outcome)) => {
                self.fleet_taken = taken;
                self.set_cut_budget(limits);
                Ok(outcome)
            }
            Err(refusal) => {
                self.admission.release(limits, store, now);
                Err(refusal)
            }
        }
    }

    /// After [`Self::finish`]: the call settling fleet token reservations with the usage
    /// (debit a shortfall, release a surplus); `None` when nothing is owed. Sent once.
    pub fn fleet_settlement(&mut self, limits: &CompiledLimits, now: u64) -> Option<RlsRequest> {
        let usage = self.settled?;
        let taken = std::mem::take(&mut self.fleet_taken);
        limits.fleet_settlement(&taken, &usage, now)
    }

    /// Busy counters evicted to admit this request (a limit's key space outgrew its `slots`).
    pub fn evictions(&self) -> usize {
        self.admission.evictions
    }

    /// Compare-and-swap retries admission needed (workers contending for the same counters).
    pub fn cas_retries(&self) -> usize {
        self.admission.retries
    }

    /// Headers for the response: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    pub fn response_headers(&self) -> Vec<(String, String)> {
        self.admission.headers().pairs()
    }

    /// The response head: whether its body must be read (token limits and a 2xx JSON or SSE
    /// body). An error status refunds the token reservation at the end: nothing was generated.
    pub fn response_head(&mut self, status: u16, content_type: Option<&str>) -> bool {
        if !self.tokens {
            return false;
        }
        if !(200..300).contains(&status) {
            self.settled = Some(Usage { prompt: 0, completion: 0, reported: false });
            return false;
        }
        let ct = content_type.unwrap_or_default().trim().to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            let usage = StreamUsage::new(self.stream_format(), self.reservation.bytes_per_token);
            self.watch = Watch::Stream(Box::new(Follow { framer: SseFramer::new(MAX_EVENT_BYTES), usage, unemitted: Vec::new() }));
        } else if ct.starts_with("application/json") || ct.contains("+json") {
            self.watch = Watch::Json(Vec::new());
        }
        !matches!(self.watch, Watch::Nothing)
    }

    /// Whether chunks may be rewritten (the adapter must then expect a different length).
    pub fn rewrites_stream(&self) -> bool {
        matches!(self.watch, Watch::Stream(_)) && (self.budget.is_some() || self.strip_usage_chunk)
    }

    /// A response body chunk.
    pub fn response_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> ChunkStep {
        self.response_chunk_read(chunk, None, end_of_stream)
    }

    /// For the combined role, when this exchange follows a stream: a reader for redaction to
    /// run in its own pass over the stream (see [`Self::response_chunk_read`]).
    pub fn shared_reader(&self) -> Option<SharedReading> {
        matches!(self.watch, Watch::Stream(_)).then(|| SharedReading::new(self.stream_format()))
    }

    /// The format a followed stream is read in (an unknown path: OpenAI chat, as redaction).
    fn stream_format(&self) -> SseFormat {
        self.format.unwrap_or(SseFormat::OpenAiChat)
    }

    /// [`Self::response_chunk`] with what redaction's pass emitted in this chunk, piece by piece
    /// (`pieces` from the session that produced `chunk`). When the pieces tile the chunk and this
    /// stream's framer holds nothing, each event redaction passed unchanged is taken with its
    /// reading instead of being framed and scanned again; the outcome is the same as reading the
    /// chunk's bytes, which is what happens otherwise.
    pub fn response_chunk_read(&mut self, chunk: &[u8], pieces: Option<&[Piece]>, end_of_stream: bool) -> ChunkStep {
        let rewriting = self.rewrites_stream();
        match std::mem::replace(&mut self.watch, Watch::Nothing) {
            Watch::Nothing => ChunkStep::Continue,
            Watch::Cut => {
                self.watch = Watch::Cut;
                if chunk.is_empty() { ChunkStep::Continue } else { ChunkStep::Replace(Vec::new()) }
            }
            Watch::Json(mut buf) => {
                if buf.len() + chunk.len() <= MAX_JSON_USAGE_BYTES {
                    buf.extend_from_slice(chunk);
                    if end_of_stream {
                        self.settled = usage::from_json_response(&buf);
                    } else {
                        self.watch = Watch::Json(buf);
                    }
                }
                ChunkStep::Continue
            }
            Watch::Stream(mut follow) => {
                let (step, keep) = self.follow(&mut follow, chunk, pieces, end_of_stream, rewriting);
                if keep {
                    self.watch = Watch::Stream(follow);
                }
                step
            }
        }
    }

    /// Reads one chunk of a followed stream; the flag says whether to keep following it.
    fn follow(
        &mut self,
        f: &mut Follow,
        chunk: &[u8],
        pieces: Option<&[Piece]>,
        end_of_stream: bool,
        rewriting: bool,
    ) -> (ChunkStep, bool) {
        if rewriting {
            f.unemitted.extend_from_slice(chunk);
        }
        let events = match Self::events(f, chunk, pieces, end_of_stream) {
            Ok(e) => e,
            Err(_) => return (self.stop_following(f, rewriting), false),
        };
        let mut out = Vec::new();
        let mut consumed = 0;
        for ev in events {
            let (raw, kind) = match ev {
                Followed::Framed(ev) => {
                    let kind = ev.data.as_deref().map_or(EventKind::Other, |d| f.usage.event(ev.event.as_deref(), d));
                    (std::borrow::Cow::Owned(ev.raw), kind)
                }
                Followed::Read(raw, reading) => (std::borrow::Cow::Borrowed(raw), f.usage.apply(reading)),
            };
            consumed += raw.len();
            if kind == EventKind::UsageOnly && self.strip_usage_chunk {
                continue;
            }
            if kind == EventKind::Text && self.budget.is_some_and(|b| f.usage.completion_so_far() > b) {
                // This event would take the caller past its budget: it is not sent.
                let refusal = Refusal::RateLimited { limit: self.cut_limit.clone(), kind: self.cut_kind, retry_after_secs: 0 };
                out.extend_from_slice(&stream_error_event(self.format, &refusal));
                if self.format != Some(SseFormat::Anthropic) && self.format != Some(SseFormat::OpenAiResponses) {
                    out.extend_from_slice(b"data: [DONE]\n\n");
                }
                self.settled = Some(f.usage.usage(self.reservation.prompt));
                self.watch = Watch::Cut;
                return (ChunkStep::Replace(out), false);
            }
            if rewriting {
                out.extend_from_slice(&raw);
            }
        }
        if end_of_stream {
            self.settled = Some(f.usage.usage(self.reservation.prompt));
        }
        if !rewriting {
            return (ChunkStep::Continue, !end_of_stream);
        }
        f.unemitted.drain(..consumed.min(f.unemitted.len()));
        if end_of_stream {
            out.append(&mut f.unemitted);
        }
        let step = if out == chunk { ChunkStep::Continue } else { ChunkStep::Replace(out) };
        (step, !end_of_stream)
    }

    /// The chunk's events, in order. Framed here, unless redaction's pieces may stand for them:
    /// the framer is empty (so it starts this chunk at an event boundary) and the pieces tile
    /// the chunk (see [`tiles`]). Then, piece by piece, the framer is empty at each piece's
    /// start and again after it: a passed piece is one event as redaction framed it, ending in
    /// a blank line whose `\n` nothing after it can extend, so framing it would give back that
    /// one event (the same bytes, `event:` name and data redaction read); a written piece ends
    /// in `\n\n`, after which any framer is empty. So framing the written pieces one by one
    /// gives the events framing the whole chunk would, and nothing is left over to exceed the
    /// event size limit.
    fn events<'c>(f: &mut Follow, chunk: &'c [u8], pieces: Option<&[Piece]>, end_of_stream: bool) -> Result<Vec<Followed<'c>>, SseError> {
        let mut events = Vec::new();
        match pieces.filter(|p| f.framer.buffered() == 0 && tiles(p, chunk)) {
            Some(pieces) => {
                let mut at = 0;
                for p in pieces {
                    let len = match *p {
                        Piece::Read { len, .. } | Piece::Written(len) => len,
                    };
                    let bytes = chunk.get(at..at + len).unwrap_or_default();
                    at += len;
                    match *p {
                        Piece::Read { reading, .. } => events.push(Followed::Read(bytes, reading)),
                        Piece::Written(_) => events.extend(f.framer.push(bytes)?.into_iter().map(Followed::Framed)),
                    }
                }
            }
            None => events.extend(f.framer.push(chunk)?.into_iter().map(Followed::Framed)),
        }
        if end_of_stream {
            events.extend(f.framer.finish()?.into_iter().map(Followed::Framed));
        }
        Ok(events)
    }

    /// A stream Cordon cannot frame: stop reading it, emit what was held, count the estimate.
    fn stop_following(&mut self, f: &mut Follow, rewriting: bool) -> ChunkStep {
        self.settled = Some(f.usage.usage(self.reservation.prompt));
        self.budget = None;
        if rewriting { ChunkStep::Replace(std::mem::take(&mut f.unemitted)) } else { ChunkStep::Continue }
    }

    /// The matching limit with the least left after admitting: name, limit, remainder.
    pub fn tightest<'a>(&self, limits: &'a CompiledLimits) -> Option<(&'a str, u64, u64)> {
        self.admission.tightest(limits)
    }

    /// The refusal code of a cut (`token_limit_exceeded` or `budget_exceeded`).
    pub fn cut_code(&self) -> &'static str {
        Refusal::RateLimited { limit: String::new(), kind: self.cut_kind, retry_after_secs: 0 }.code()
    }

    /// Whether the stream was cut at the budget.
    pub fn was_cut(&self) -> bool {
        matches!(self.watch, Watch::Cut)
    }

    /// Ends the exchange: reconciles reservations with the usage (reported, counted from the
    /// stream, or — for an aborted exchange — the reservation itself, which is then kept).
    /// Idempotent; returns the usage settled on.
    pub fn finish(&mut self, limits: &CompiledLimits, store: &dyn CasStore, now: u64) -> Result<Usage, Refusal> {
        let usage = match (&self.settled, &self.watch) {
            (Some(u), _) => *u,
            (None, Watch::Stream(f)) => f.usage.usage(self.reservation.prompt),
            (None, _) => Usage { prompt: self.reservation.prompt, completion: self.reservation.completion, reported: false },
        };
        self.settled = Some(usage);
        self.admission.reconcile(limits, &usage, store, now)?;
        Ok(usage)
    }
}

/// Whether `pieces` cover `chunk` exactly, each ending in a blank line ended by `\n`: a
/// passed event in `\n\n`, `\n\r\n` or `\r\r\n` (not in a lone `\r` the next byte could
/// extend, nor in the `\r\n` a stream's last event gets when it lacks its blank line), a
/// written piece in `\n\n`.
fn tiles(pieces: &[Piece], chunk: &[u8]) -> bool {
    let mut at = 0usize;
    for p in pieces {
        let len = match *p {
            Piece::Read { len, .. } | Piece::Written(len) => len,
        };
        let Some(bytes) = chunk.get(at..at.saturating_add(len)) else { return false };
        let whole = match p {
            Piece::Read { .. } => matches!(bytes, [.., b'\n', b'\n'] | [.., b'\n' | b'\r', b'\r', b'\n']),
            Piece::Written(_) => bytes.ends_with(b"\n\n"),
        };
        if !whole {
            return false;
        }
        at += len;
    }
    at == chunk.len()
}

/// Adds `stream_options.include_usage: true` to a streamed OpenAI chat request that did not ask
/// for it, so the model reports exact usage; `None` when nothing needs to change.
fn ask_for_usage(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    if !v.get("stream").and_then(Value::as_bool).unwrap_or(false) || usage::asks_for_stream_usage(&v) {
        return None;
    }
    let obj = v.as_object_mut()?;
    let opts = obj.entry("stream_options").or_insert_with(|| Value::Object(serde_json::Map::new()));
    opts.as_object_mut()?.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
