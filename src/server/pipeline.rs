//! One request's way through the server: parse → transaction check → classify (the edge, with the
//! token validator) → the machine → response bytes. Transport-independent; `mod.rs` feeds it
//! frames from UDP datagrams and TCP streams.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mcx_model::{
    AssertedIdentity, Input, ProtectionFailure, PublishTarget, Response, TokenVerdict, UnixTime,
};

use super::config::SipConfig;
use super::state::{Shared, TransactionState, TxKey};
use crate::sip::adapter::{classify, Edge, EdgeConfig, EdgeContext};
use crate::sip::body::ProtectedElement;
use crate::sip::framing::{Frame, FramingError, FramingErrorKind};
use crate::sip::parse::{parse, SipMessage, SipRequest};
use crate::sip::response::{self, Extras, ResponseConfig};
use crate::token::Validator;

/// The transport a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: retransmissions are absorbed by the transaction cache.
    Udp,
    /// TCP: reliable, no retransmissions (RFC 3261 17.2.2 Timer J = 0).
    Tcp,
}

/// Everything a request needs, shared by every listener.
pub struct Pipeline {
    sip: SipConfig,
    edge: EdgeConfig,
    response: ResponseConfig,
    validator: Validator,
    shared: Arc<Mutex<Shared>>,
}

impl Pipeline {
    /// A pipeline over `shared`.
    pub fn new(sip: SipConfig, validator: Validator, shared: Arc<Mutex<Shared>>) -> Self {
        let edge = sip.edge();
        let response = edge.response_config();
        Pipeline {
            sip,
            edge,
            response,
            validator,
            shared,
        }
    }

    /// The shared state.
    pub fn shared(&self) -> Arc<Mutex<Shared>> {
        self.shared.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a framing failure: 400 or 513 when the header block is readable, else log and
    /// drop.
    pub fn framing_error(
        &self,
        e: &FramingError,
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        if e.kind == FramingErrorKind::KeepAlive {
            // RFC 5626 4.4.1: a double-CRLF ping on a stream is answered with a single CRLF.
            return (transport == Transport::Tcp).then(|| b"\r\n".to_vec());
        }
        let reply = match (e.status(), &e.head) {
            (Some(status), Some(head)) => response::error_response_for_head(
                head,
                status,
                Some(&e.kind.to_string()),
                &self.response,
            ),
            _ => None,
        };
        let mut s = self.lock();
        match &reply {
            Some(_) => {
                let status = e.status().unwrap_or(400);
                *s.metrics
                    .requests
                    .entry(("UNFRAMED".into(), status))
                    .or_default() += 1;
                tracing::info!(%src, status, reason = %e.kind, "refused unframable message");
            }
            None => {
                *s.metrics.dropped.entry("framing").or_default() += 1;
                tracing::info!(%src, reason = %e.kind, "dropped unframable message");
            }
        }
        reply
    }

    /// Handles one framed message; returns the bytes to send back, if any.
    pub fn process(&self, frame: Frame, src: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        match self.parse(&frame, src) {
            Parsed::Reply(reply) => reply,
            Parsed::Request(req) => self.handle(&req, src, transport),
        }
    }

    /// The first stage: parse, answering what cannot be parsed.
    pub fn parse(&self, frame: &Frame, src: SocketAddr) -> Parsed {
        let req = match parse(frame) {
            Ok(SipMessage::Request(req)) => req,
            Ok(SipMessage::Response(r)) => {
                // We send no requests, so no response is ours.
                tracing::debug!(%src, status = r.status, "ignored a response");
                return Parsed::Reply(None);
            }
            Err(e) => {
                let reply = e.reply_to.as_ref().map(|to| {
                    response::build(
                        to,
                        e.status,
                        Some(&e.reason),
                        &Extras::default(),
                        &self.response,
                    )
                });
                let mut s = self.lock();
                match reply {
                    Some(_) => {
                        *s.metrics
                            .requests
                            .entry(("INVALID".into(), e.status))
                            .or_default() += 1
                    }
                    None => *s.metrics.dropped.entry("unparsable").or_default() += 1,
                }
                tracing::info!(%src, status = e.status, reason = %e.reason, answered = reply.is_some(), "invalid SIP message");
                return Parsed::Reply(reply);
            }
        };
        Parsed::Request(req)
    }

    /// The second stage: the transaction check, the token validator, the machine, the response.
    /// Requests of one IMPU must reach this stage in arrival order (RFC 3903 R-35); see
    /// [`shard_key`].
    pub fn handle(
        &self,
        req: &SipRequest,
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        match self.admit(req, src, transport) {
            Admission::New { tx, now } => self.step(req, src, tx, now, None),
            Admission::Absorb => None,
            Admission::Retransmit(bytes) => Some(bytes),
        }
    }

    /// The transaction check (RFC 3261 17.2.2), in arrival order, before any work: a
    /// retransmission is answered from the cache (or absorbed) and costs no signature check.
    pub fn admit(&self, req: &SipRequest, src: SocketAddr, transport: Transport) -> Admission {
        let Some(key) = (transport == Transport::Udp)
            .then(|| transaction_key(req, src))
            .flatten()
        else {
            return Admission::New {
                tx: None,
                now: self.lock().clock.now(),
            };
        };
        let mut s = self.lock();
        match s.transactions.begin(key, Instant::now()) {
            TransactionState::New => Admission::New {
                tx: Some(key),
                now: s.clock.now(),
            },
            TransactionState::Absorb => Admission::Absorb,
            TransactionState::Retransmit(bytes) => {
                tracing::debug!(%src, method = %req.method, "retransmission answered from the transaction");
                Admission::Retransmit(bytes)
            }
        }
    }

    /// Whether the request carries access tokens whose signatures [`Pipeline::verify`] should
    /// check before its ordered step: a PUBLISH with a body from a trusted SIP core (the edge
    /// reads no untrusted body).
    pub fn needs_verification(&self, req: &SipRequest, src: SocketAddr) -> bool {
        req.method == crate::sip::parse::Method::Publish
            && !req.body.is_empty()
            && self.sip.is_trusted(src.ip())
    }

    /// Checks the request's token signatures at `now` (its admission's clock reading), off the
    /// ordered path, in parallel with other requests: the edge reads the body as in
    /// [`Pipeline::step`], and the verdicts it asks for are kept for that step. The edge's
    /// answer here is discarded; it decides nothing.
    pub fn verify(&self, req: &SipRequest, src: SocketAddr, now: UnixTime) -> Verdicts {
        let mut verdicts = Verdicts::default();
        let mut validate = |token: &str| {
            let v = self.validator.validate(token, now);
            verdicts.0.push((token_hash(token), v.clone()));
            v
        };
        let mut open = |_: &ProtectedElement| Err(ProtectionFailure::NotSupported);
        let _ = classify(
            req,
            &mut EdgeContext {
                config: &self.edge,
                trusted_source: self.sip.is_trusted(src.ip()),
                validate: &mut validate,
                open: &mut open,
                fresh_etag: mcx_model::ETag::new(String::new()),
            },
        );
        verdicts
    }

    /// The ordered step of an admitted request: the edge (with the verdicts of
    /// [`Pipeline::verify`], if it ran), the machine, the response, the transaction record.
    /// `now` is the admission's clock reading: the validator and the machine see the same one.
    pub fn step(
        &self,
        req: &SipRequest,
        src: SocketAddr,
        tx: Option<TxKey>,
        now: UnixTime,
        verdicts: Option<Verdicts>,
    ) -> Option<Vec<u8>> {
        let fresh_etag = self.lock().etags.fresh();
        // Token signatures not checked ahead are checked here, outside the lock, and only for
        // requests from a trusted SIP core (the edge does not read an untrusted body).
        let trusted_source = self.sip.is_trusted(src.ip());
        let mut verdicts = verdicts.unwrap_or_default();
        let mut validate = |token: &str| {
            verdicts
                .take(token_hash(token))
                .unwrap_or_else(|| self.validator.validate(token, now))
        };
        // No CSK store in this build: a protected value is reported as not openable, and the
        // machine answers it (403/101, or per `token_protection`).
        let mut open = |_: &ProtectedElement| Err(ProtectionFailure::NotSupported);
        let edge = classify(
            req,
            &mut EdgeContext {
                config: &self.edge,
                trusted_source,
                validate: &mut validate,
                open: &mut open,
                fresh_etag,
            },
        );
        // The per-request log line's fields are built only when it is written.
        let info = tracing::enabled!(tracing::Level::INFO);
        let (reply, status, outcome, impu, service): (_, _, Cow<'static, str>, _, _) = match edge {
            Edge::Machine { input, notes } => {
                for note in notes {
                    tracing::info!(%src, method = %req.method, note, "edge note");
                }
                let (impu, service) = if info { describe(&input) } else { (None, None) };
                let response: Option<Response> = self.lock().step(now, input);
                let Some(response) = response else {
                    tracing::error!("the machine gave no response to a request (bug)");
                    return None;
                };
                let bytes = response::build_response(req, &response, &self.response);
                (
                    Some(bytes),
                    response.status(),
                    if info {
                        response.outcome.label().into()
                    } else {
                        "".into()
                    },
                    impu,
                    service,
                )
            }
            Edge::Options => (
                Some(response::options_ok(req, &self.response)),
                200,
                "options".into(),
                None,
                None,
            ),
            Edge::MethodNotAllowed => (
                Some(response::method_not_allowed(req, &self.response)),
                405,
                "method_not_allowed".into(),
                None,
                None,
            ),
            Edge::NoTransaction => (
                Some(response::simple(req, 481, None, &self.response)),
                481,
                "no_transaction".into(),
                None,
                None,
            ),
            Edge::Absorb => (None, 0, "absorbed".into(), None, None),
        };
        let mut s = self.lock();
        if let Some(key) = tx {
            match &reply {
                Some(bytes) => s.transactions.complete(key, bytes),
                None => s.transactions.abandon(key),
            }
        }
        if reply.is_some() {
            *s.metrics
                .requests
                .entry((req.method.to_string(), status))
                .or_default() += 1;
        }
        drop(s);
        tracing::info!(
            %src,
            method = %req.method,
            impu = impu.as_deref().unwrap_or("-"),
            service = service.unwrap_or("-"),
            status,
            outcome = &*outcome,
            "request"
        );
        reply
    }
}

/// What the transaction check made of a request.
pub enum Admission {
    /// A new transaction (named by `tx` on UDP): process it at `now` (one clock reading per
    /// request).
    New {
        /// The transaction's key (UDP only).
        tx: Option<TxKey>,
        /// The clock reading the validator and the machine use for this request.
        now: UnixTime,
    },
    /// A retransmission of a request still in progress: drop it.
    Absorb,
    /// A retransmission of an answered request: send these bytes again.
    Retransmit(Vec<u8>),
}

/// Token verdicts reached ahead of the ordered step, by a hash of the token text.
#[derive(Default)]
pub struct Verdicts(Vec<(u64, TokenVerdict)>);

impl Verdicts {
    fn take(&mut self, hash: u64) -> Option<TokenVerdict> {
        let i = self.0.iter().position(|(h, _)| *h == hash)?;
        Some(self.0.swap_remove(i).1)
    }
}

/// A hash of a token, to find its verdict again (a collision only costs a second check: the
/// ordered step checks a token whose verdict it does not find, and a wrong match cannot happen
/// for a different token of the same request unless the 64-bit hashes collide, which a sender
/// cannot steer without knowing the process's random keys).
fn token_hash(token: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(token)
}

/// What the first stage made of a message.
pub enum Parsed {
    /// Answered (or dropped) already.
    Reply(Option<Vec<u8>>),
    /// A request for [`Pipeline::handle`].
    Request(Box<SipRequest>),
}

/// Which IMPU a request concerns, by the very rule the edge uses for the machine's input
/// ([`crate::sip::adapter::identity_of`]), hashed: requests with the same key are handled in
/// arrival order by one worker, so RFC 3903's in-order processing per resource holds while
/// different IMPUs are handled in parallel.
pub fn shard_key(req: &SipRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let identity = crate::sip::adapter::identity_of(req).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    identity.hash(&mut h);
    h.finish()
}

/// RFC 3261 17.2.3: a server transaction is named by the top Via's branch (with the magic
/// cookie), its sent-by and the method. Requests without an RFC 3261 branch are not cached.
fn transaction_key(req: &SipRequest, src: SocketAddr) -> Option<TxKey> {
    let branch = req
        .top_branch
        .as_deref()
        .filter(|b| b.starts_with("z9hG4bK"))?;
    let sent_by = req
        .vias
        .first()
        .map_or("", |v| v.split(';').next().unwrap_or(""));
    let (ip, port) = match src {
        SocketAddr::V4(a) => (a.ip().to_ipv6_mapped().octets(), a.port()),
        SocketAddr::V6(a) => (a.ip().octets(), a.port()),
    };
    Some(TxKey::new(&[
        branch.as_bytes(),
        sent_by.as_bytes(),
        req.cseq_method.as_bytes(),
        &ip,
        &port.to_be_bytes(),
    ]))
}

fn describe(input: &Input) -> (Option<String>, Option<&'static str>) {
    let impu = |a: &AssertedIdentity| match a {
        AssertedIdentity::Trusted(i) => Some(i.to_string()),
        AssertedIdentity::Untrusted => Some("(untrusted)".into()),
        AssertedIdentity::Missing => None,
    };
    match input {
        Input::Publish(p) => (
            impu(&p.impu),
            match p.target {
                PublishTarget::Service(s) => Some(s.name()),
                _ => None,
            },
        ),
        Input::ThirdPartyRegister(r) => (impu(&r.impu), None),
        Input::Tick | Input::Restart | Input::ProvisionCsk { .. } => (None, None),
    }
}
