//! One request's way through the server: parse → transaction check → classify (the edge, with the
//! token validator) → the machine → response bytes. Transport-independent; `mod.rs` feeds it
//! frames from UDP datagrams and TCP streams.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mcx_model::{AssertedIdentity, Input, ProtectionFailure, PublishTarget, Response};

use super::config::SipConfig;
use super::state::{Shared, TransactionState};
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
        let key = (transport == Transport::Udp)
            .then(|| transaction_key(req, src))
            .flatten();
        // One clock reading per request: the validator and the machine see the same `now`.
        let (now, fresh_etag) = {
            let mut s = self.lock();
            if let Some(key) = &key {
                match s.transactions.begin(key, Instant::now()) {
                    TransactionState::New => {}
                    TransactionState::Absorb => return None,
                    TransactionState::Retransmit(bytes) => {
                        tracing::debug!(%src, method = %req.method, "retransmission answered from the transaction");
                        return Some(bytes);
                    }
                }
            }
            (s.clock.now(), s.etags.fresh())
        };
        // Token signatures are checked here, outside the lock, and only for requests from a
        // trusted SIP core (the edge does not read an untrusted body).
        let trusted_source = self.sip.is_trusted(src.ip());
        let mut validate = |token: &str| self.validator.validate(token, now);
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
        let (reply, status, outcome, impu, service) = match edge {
            Edge::Machine { input, notes } => {
                for note in notes {
                    tracing::info!(%src, method = %req.method, note, "edge note");
                }
                let (impu, service) = describe(&input);
                let response: Option<Response> = self.lock().step(now, input);
                let Some(response) = response else {
                    tracing::error!("the machine gave no response to a request (bug)");
                    return None;
                };
                let bytes = response::build_response(req, &response, &self.response);
                (
                    Some(bytes),
                    response.status(),
                    response.outcome.label(),
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
        if let Some(key) = &key {
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
            outcome,
            "request"
        );
        reply
    }
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
fn transaction_key(req: &SipRequest, src: SocketAddr) -> Option<String> {
    let branch = req
        .top_branch
        .as_deref()
        .filter(|b| b.starts_with("z9hG4bK"))?;
    let sent_by = req
        .vias
        .first()
        .map_or("", |v| v.split(';').next().unwrap_or(""));
    Some(format!("{branch}|{sent_by}|{}|{src}", req.cseq_method))
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
