//! One request's way through the server: parse → transaction check → classify (the edge, with the
//! token validator) → the machine → response bytes. Transport-independent; `mod.rs` feeds it
//! frames from UDP datagrams and TCP streams.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mcx_model::{
    AssertedIdentity, Input, KeyUpload, KeyUploadFailure, ProtectionFailure, PublishBody,
    PublishTarget, Response, Seq, TokenVerdict, UnixTime,
};

use super::config::SipConfig;
use super::state::{Shared, TransactionState, TxKey};
use crate::mikey::Pending;
use crate::protection::KeyStore;
use crate::sip::adapter::{classify, Edge, EdgeConfig, EdgeContext, Sealed};
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
    /// TLS over TCP (RFC 3261 26.3.1). `trusted_peer`: the client presented a certificate the
    /// listener's `trusted_client_*` names, so the sender is a trusted SIP core whatever its
    /// source address.
    Tls {
        /// Whether the client certificate makes the peer a trusted SIP core.
        trusted_peer: bool,
    },
}

impl Transport {
    /// Whether this is a stream (TCP or TLS).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Whether the transport itself vouches for the peer (a trusted TLS client certificate).
    pub fn trusted_peer(self) -> bool {
        matches!(self, Transport::Tls { trusted_peer: true })
    }
}

/// Everything a request needs, shared by every listener.
pub struct Pipeline {
    sip: SipConfig,
    edge: EdgeConfig,
    response: ResponseConfig,
    validator: Arc<Validator>,
    /// The CSK store (`None` under `token_protection = off`).
    keys: Option<Arc<KeyStore>>,
    shared: Arc<Mutex<Shared>>,
    /// The durable store responses wait for (issue 13); `None`: nothing to wait for.
    store: Option<Arc<crate::store::Store>>,
}

/// A response to send, once the machine's state it answers for is durable (issue 13: persist,
/// then send).
#[derive(Debug)]
pub struct Reply {
    /// The response bytes.
    pub bytes: Vec<u8>,
    /// Send only once this sequence number is durable ([`Pipeline::durable`]).
    pub wait_for: Seq,
}

impl Reply {
    /// A reply that depends on no machine state (parse errors, OPTIONS, 405, 481).
    pub fn now(bytes: Vec<u8>) -> Reply {
        Reply {
            bytes,
            wait_for: Seq::ZERO,
        }
    }
}

impl Pipeline {
    /// A pipeline over `shared`.
    pub fn new(
        sip: SipConfig,
        validator: Arc<Validator>,
        keys: Option<Arc<KeyStore>>,
        shared: Arc<Mutex<Shared>>,
    ) -> Self {
        let edge = sip.edge();
        let response = edge.response_config();
        let store = shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .clone();
        Pipeline {
            sip,
            edge,
            response,
            validator,
            keys,
            shared,
            store,
        }
    }

    /// Whether `seq` is durable already (always, without a store).
    pub fn is_durable(&self, seq: Seq) -> bool {
        self.store.as_ref().is_none_or(|s| s.durable() >= seq)
    }

    /// Waits until `seq` is durable: call before sending a [`Reply`].
    pub async fn durable(&self, seq: Seq) {
        if let Some(store) = &self.store {
            store.wait(seq).await;
        }
    }

    /// The token validator (its counters are in `/metrics`).
    pub fn validator(&self) -> &Validator {
        &self.validator
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
            return transport.is_stream().then(|| b"\r\n".to_vec());
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
                s.metrics.count_request("UNFRAMED", status);
                tracing::info!(%src, status, reason = %e.kind, "refused unframable message");
            }
            None => {
                *s.metrics.dropped.entry("framing").or_default() += 1;
                tracing::info!(%src, reason = %e.kind, "dropped unframable message");
            }
        }
        reply
    }

    /// Handles one framed message; returns what to send back, if any (once durable).
    pub fn process(&self, frame: Frame, src: SocketAddr, transport: Transport) -> Option<Reply> {
        match self.parse(&frame, src) {
            Parsed::Reply(reply) => reply.map(Reply::now),
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
                    Some(_) => s.metrics.count_request("INVALID", e.status),
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
    /// [`shard_key`]. (The UDP hot path, `udp.rs`, runs the same three steps apart:
    /// [`Pipeline::admit`], [`Pipeline::verify`] off the ordered path, [`Pipeline::step`].)
    pub fn handle(&self, req: &SipRequest, src: SocketAddr, transport: Transport) -> Option<Reply> {
        match self.admit(req, src, transport) {
            Admission::New(admitted) => self.step(req, src, transport, admitted, None),
            Admission::Absorb => None,
            Admission::Retransmit(reply) => Some(reply),
        }
    }

    /// The transaction check (RFC 3261 17.2.2), in arrival order, before any work: a
    /// retransmission is answered from the cache, once durable (issue 13), or absorbed, and
    /// costs no signature check. Takes the request's one clock reading.
    pub fn admit(&self, req: &SipRequest, src: SocketAddr, transport: Transport) -> Admission {
        let key = (transport == Transport::Udp)
            .then(|| transaction_key(req, src))
            .flatten();
        let mut s = self.lock();
        if let Some(key) = key {
            match s.transactions.begin(key, Instant::now()) {
                TransactionState::New => {}
                TransactionState::Absorb => return Admission::Absorb,
                TransactionState::Retransmit(bytes, wait_for) => {
                    tracing::debug!(%src, method = %req.method, "retransmission answered from the transaction");
                    return Admission::Retransmit(Reply { bytes, wait_for });
                }
            }
        }
        Admission::New(Admitted {
            tx: key,
            fresh_etag: s.etags.fresh(),
            now: s.clock.now(),
        })
    }

    /// Whether the request carries access tokens whose signatures [`Pipeline::verify`] should
    /// check ahead of its ordered step: a PUBLISH with a body from a trusted SIP core (the edge
    /// reads no untrusted body).
    pub fn needs_verification(
        &self,
        req: &SipRequest,
        src: SocketAddr,
        transport: Transport,
    ) -> bool {
        req.method == crate::sip::parse::Method::Publish
            && !req.body.is_empty()
            && (transport.trusted_peer() || self.sip.is_trusted(src.ip()))
    }

    /// The request's expensive checks at `now` (its admission's clock reading), off the ordered
    /// path and in parallel with other requests: the edge reads the body as in
    /// [`Pipeline::step`] and every token signature it asks for is checked, as is the first CSK
    /// upload (TS 33.180 5.4; its CSK opens the token here as in the step). Each result is a pure
    /// function of the bytes and `now`, so the step uses it in place of checking again. The
    /// edge's answer here is thrown away: it decides nothing, and neither does this.
    pub fn verify(
        &self,
        req: &SipRequest,
        src: SocketAddr,
        transport: Transport,
        now: UnixTime,
    ) -> Verdicts {
        let mut verdicts = Verdicts::default();
        let tokens = std::cell::RefCell::new(Vec::new());
        let mut validate = |token: &str| {
            let v = self.validator.validate(token, now);
            tokens.borrow_mut().push((token_hash(token), v.clone()));
            v
        };
        let upload = std::cell::RefCell::new(Pending::None);
        let first_part = std::cell::Cell::new(None);
        let mut key_transport = |part: &[u8]| {
            if matches!(*upload.borrow(), Pending::None) {
                first_part.set(Some(token_hash_bytes(part)));
            }
            let receiver = self.keys.as_deref().and_then(KeyStore::uploads);
            upload.borrow_mut().receive(receiver, part, now.0);
        };
        let mut open = |s: &Sealed<'_>| match &self.keys {
            Some(keys) => keys.open_with(s, upload.borrow().entry().as_ref()),
            None => Err(ProtectionFailure::NotSupported),
        };
        let _ = classify(
            req,
            &mut EdgeContext {
                config: &self.edge,
                trusted_source: transport.trusted_peer() || self.sip.is_trusted(src.ip()),
                validate: &mut validate,
                open: &mut open,
                key_transport: &mut key_transport,
                fresh_etag: mcx_model::ETag::new(""),
            },
        );
        verdicts.tokens = tokens.into_inner();
        // Only the first part is ever checked (a second makes the request's upload `Many`).
        if let (Some(hash), Pending::One(checked)) = (first_part.get(), upload.into_inner()) {
            verdicts.upload = Some((hash, checked));
        }
        verdicts
    }

    /// The ordered step of an admitted request: the edge (with the results of
    /// [`Pipeline::verify`], if it ran; anything it did not check is checked here), the machine,
    /// the response, the transaction record. `now` is the admission's clock reading: the
    /// validator and the machine see the same one.
    pub fn step(
        &self,
        req: &SipRequest,
        src: SocketAddr,
        transport: Transport,
        admitted: Admitted,
        verdicts: Option<Verdicts>,
    ) -> Option<Reply> {
        let Admitted {
            tx: key,
            fresh_etag,
            now,
        } = admitted;
        let mut verdicts = verdicts.unwrap_or_default();
        // Token signatures not checked ahead are checked here, outside the lock, and only for
        // requests from a trusted SIP core (the edge does not read an untrusted body). Over TLS
        // a trusted client certificate makes a trusted core too.
        let trusted_source = transport.trusted_peer() || self.sip.is_trusted(src.ip());
        let mut ahead = std::mem::take(&mut verdicts.tokens);
        let mut validate = |token: &str| {
            let h = token_hash(token);
            match ahead.iter().position(|(k, _)| *k == h) {
                Some(i) => ahead.swap_remove(i).1,
                None => self.validator.validate(token, now),
            }
        };
        // TS 33.180 clause 9: protected values are opened with the CSK store, outside the lock;
        // under `token_protection = off` they are not opened at all. The machine decides.
        // TS 33.180 5.4: a CSK upload (`application/mikey` part) is checked before the token is
        // opened, and its CSK may open the same PUBLISH's token; the machine decides the rest.
        let upload = std::cell::RefCell::new(Pending::None);
        let mut checked_ahead = verdicts.upload.take();
        let mut key_transport = |part: &[u8]| {
            let mut u = upload.borrow_mut();
            if matches!(*u, Pending::None) {
                if let Some((_, checked)) =
                    checked_ahead.take_if(|(h, _)| *h == token_hash_bytes(part))
                {
                    *u = Pending::One(checked);
                    return;
                }
            }
            let receiver = self.keys.as_deref().and_then(KeyStore::uploads);
            u.receive(receiver, part, now.0);
        };
        let mut open = |s: &Sealed<'_>| match &self.keys {
            Some(keys) => keys.open_with(s, upload.borrow().entry().as_ref()),
            None => Err(ProtectionFailure::NotSupported),
        };
        let mut edge = classify(
            req,
            &mut EdgeContext {
                config: &self.edge,
                trusted_source,
                validate: &mut validate,
                open: &mut open,
                key_transport: &mut key_transport,
                fresh_etag,
            },
        );
        let mut wait_for = Seq::ZERO;
        let uploaded = self.attach_upload(&mut edge, upload.into_inner(), src);
        // The per-request log line's fields are built only when it is written.
        let info = tracing::enabled!(tracing::Level::INFO);
        let (reply, status, outcome, impu, service): (_, _, Cow<'static, str>, _, _) = match edge {
            Edge::Machine { input, notes } => {
                for note in notes {
                    tracing::info!(%src, method = %req.method, note, "edge note");
                }
                let (impu, service) = if info { describe(&input) } else { (None, None) };
                let response: Option<Response> = {
                    let mut s = self.lock();
                    // The uploaded CSK, for the key store to keep if the machine accepts it.
                    let _staged = self.keys.as_deref().zip(uploaded).map(|(k, e)| k.stage(e));
                    s.step(now, input)
                };
                let Some(response) = response else {
                    tracing::error!("no response to a request: dropped after shared-store contention (mcx_sip_dropped_total{{reason=\"store_contention\"}}), else a bug");
                    // Forget the transaction, so that the client's retransmission runs again.
                    if let Some(key) = &key {
                        self.lock().transactions.abandon(*key);
                    }
                    return None;
                };
                let bytes = response::build_response(req, &response, &self.response);
                wait_for = response.wait_for;
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
        if let Some(key) = key {
            match &reply {
                Some(bytes) => s.transactions.complete(key, bytes, wait_for),
                None => s.transactions.abandon(key),
            }
        }
        if reply.is_some() {
            s.metrics.count_request(req.method.as_str(), status);
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
        reply.map(|bytes| Reply { bytes, wait_for })
    }
}

impl Pipeline {
    /// Gives a PUBLISH's checked CSK upload to the machine (`Publish::key_upload`), with the
    /// signer found among the token's verified MC service IDs; logs a refusal's reason. Returns
    /// the uploaded CSK, for [`KeyStore::stage`].
    fn attach_upload(
        &self,
        edge: &mut Edge,
        upload: Pending,
        src: SocketAddr,
    ) -> Option<mcx_sec::csk::CskEntry> {
        let Edge::Machine {
            input: Input::Publish(p),
            ..
        } = edge
        else {
            return None;
        };
        let checked = match upload {
            Pending::None => return None,
            Pending::Many => {
                tracing::info!(%src, reason = "more than one application/mikey part", "CSK upload refused");
                p.key_upload = Some(Box::new(KeyUpload::Rejected(KeyUploadFailure::Malformed)));
                return None;
            }
            Pending::One(c) => c,
        };
        let claims = match &p.body {
            PublishBody::Authorization(a) => match &a.token {
                TokenVerdict::Verified(c) => Some(c),
                TokenVerdict::Rejected(_) => None,
            },
            _ => None,
        };
        let receiver = self.keys.as_deref().and_then(KeyStore::uploads);
        let certs = receiver.map_or(&[][..], |r| r.certificates());
        let key_upload = checked.key_upload(certs, claims);
        match (&key_upload, checked.reason()) {
            (KeyUpload::Verified { csk_id, signer, .. }, _) => {
                tracing::info!(%src, %csk_id, signer = signer.as_ref().map_or("(none of the token's MC service IDs)", |m| m.as_str()), "CSK upload verified")
            }
            (KeyUpload::Rejected(failure), reason) => {
                tracing::info!(%src, ?failure, reason = reason.as_deref().unwrap_or("-"), "CSK upload refused")
            }
        }
        p.key_upload = Some(Box::new(key_upload));
        checked.entry()
    }
}

/// What the transaction check made of a request.
pub enum Admission {
    /// A new transaction: process it.
    New(Admitted),
    /// A retransmission of a request still in progress: drop it.
    Absorb,
    /// A retransmission of an answered request: send its response again (once durable).
    Retransmit(Reply),
}

/// An admitted request's transaction, entity-tag and clock reading, taken under one lock.
pub struct Admitted {
    /// The transaction's key (UDP only).
    pub tx: Option<TxKey>,
    /// The SIP-ETag the machine may hand out for this request (RFC 3903 step 6).
    pub fresh_etag: mcx_model::ETag,
    /// The clock reading the validator and the machine use for this request (one per request).
    pub now: UnixTime,
}

/// What [`Pipeline::verify`] checked ahead of the ordered step: token verdicts by a hash of the
/// token text, and the first CSK upload's check by a hash of its part.
#[derive(Default)]
pub struct Verdicts {
    tokens: Vec<(u64, TokenVerdict)>,
    upload: Option<(u64, Box<crate::mikey::Checked>)>,
}

/// A keyed hash of a token, to find its verdict again. A collision only matters between two
/// tokens of one request, and a sender cannot steer one without the process's random keys.
fn token_hash(token: &str) -> u64 {
    token_hash_bytes(token.as_bytes())
}

fn token_hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(bytes)
}

/// What the first stage made of a message.
pub enum Parsed {
    /// Answered (or dropped) already.
    Reply(Option<Vec<u8>>),
    /// A request for [`Pipeline::handle`].
    Request(Box<SipRequest>),
}

/// Which IMPU a request concerns, by the very rule the edge uses for the machine's input
/// ([`crate::sip::adapter::identity_of`]), hashed: requests with the same key take their ordered
/// step in arrival order (on UDP, the [`super::sequencer::Sequencer`] sees to it), so RFC 3903's
/// in-order processing per resource holds while different IMPUs are handled in parallel.
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
        Input::Tick
        | Input::Restart
        | Input::Load(_)
        | Input::Reload(_)
        | Input::ProvisionCsk { .. } => (None, None),
    }
}
