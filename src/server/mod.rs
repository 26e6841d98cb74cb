//! The tokio runtime that drives the machine: UDP, TCP and TLS listeners (supervised and bounded,
//! [`vitals`]), the tick timer, the admin
//! view and graceful shutdown (after mini-redis). It decides nothing: bytes go through the SIP
//! edge ([`crate::sip`]) and the token validator into a [`mcx_model::Input`], the machine answers,
//! and the answer goes back out as bytes.

pub mod admin;
pub mod config;
pub mod pipeline;
pub mod sequencer;
pub mod state;
pub mod tls;
pub mod udp;
pub mod vitals;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use config::{LimitsConfig, ServerConfig};
pub use pipeline::{Parsed, Pipeline, Reply, Transport};
pub use state::Shared;
pub use vitals::Vitals;

use crate::sip::framing::StreamFramer;
use crate::token::Validator;
use config::SipConfig;
use tls::TlsListener;
use vitals::{panic_message, ListenerId, RateLimiter, Refusal, Timeout};

/// A bound, not yet running server.
pub struct Server {
    ctx: Arc<Ctx>,
    /// The durable store and how many IMPUs it held at start-up.
    store: Option<(Arc<crate::store::Store>, usize)>,
    /// The shared PostgreSQL store's location and how many IMPUs it held at start-up.
    shared_store: Option<(std::path::PathBuf, usize)>,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<TcpListener>,
    tls: Vec<(TcpListener, TlsListener)>,
    admin: Option<TcpListener>,
    lab_controls: bool,
    /// The KMS/CM/GM listener, its TLS configuration, and their state.
    http: Option<(
        TcpListener,
        Option<rustls::ServerConfig>,
        Arc<crate::resource::Ctx>,
    )>,
}

/// What every listener shares: the pipeline, the limits, the counters kept outside the lock.
struct Ctx {
    pipeline: Arc<Pipeline>,
    sip: SipConfig,
    limits: LimitsConfig,
    limiter: Option<RateLimiter>,
    vitals: Arc<Vitals>,
}

impl Ctx {
    /// Whether one more message (or connection) from `src` may pass the per-source rate limit;
    /// trusted SIP cores are never limited.
    fn admit(&self, src: SocketAddr, trusted: bool) -> bool {
        match &self.limiter {
            Some(l) if !trusted && !l.allow(src.ip(), Instant::now()) => {
                self.vitals
                    .rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }
}

/// The addresses a [`Server`] actually listens on (ports resolved when 0 was asked for).
#[derive(Clone, Debug)]
pub struct BoundAddrs {
    /// SIP over UDP.
    pub udp: Vec<SocketAddr>,
    /// SIP over TCP.
    pub tcp: Vec<SocketAddr>,
    /// SIP over TLS.
    pub tls: Vec<SocketAddr>,
    /// The admin view.
    pub admin: Option<SocketAddr>,
    /// The KMS, CM and GM servers.
    pub http: Option<SocketAddr>,
    /// Whether [`Self::http`] speaks HTTPS.
    pub http_tls: bool,
}

impl Server {
    /// Builds the validator and the machine and binds every listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        let policy = config.policy.policy()?;
        let policy_protection = policy.token_protection;
        // The validator fetches the JWKS URL (blocking, bounded by its timeout): off the
        // runtime's threads.
        let token = config.token.clone();
        let validator = Arc::new(
            tokio::task::spawn_blocking(move || Validator::new(token))
                .await
                .context("token validator")?
                .context("token validator")?,
        );
        config.http.check()?;
        let mut state = Shared::new(
            policy,
            config.sip.transaction_cache_entries,
            config.sip.transaction_cache_bytes,
        );
        // TS 33.180 clause 9: the CSK store, and the machine told which MC service ID each
        // lab CSK belongs to (TS 33.180 5.4). Under `token_protection = off` nothing is opened.
        let uploads = match (policy_protection, config.mikey.enabled) {
            (mcx_model::TokenProtection::Off, _) | (_, false) => None,
            _ => match mikey_receiver(&config).await {
                Ok(r) => Some(r),
                Err(e) if config.mikey.kms_dir.is_none() && config.mikey.identity.is_none() => {
                    tracing::warn!("CSK uploads (TS 33.180 5.4) will be refused: {e:#}");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let keys = (policy_protection != mcx_model::TokenProtection::Off)
            .then(|| -> anyhow::Result<_> {
                let store = crate::protection::KeyStore::new(
                    config.protection.table()?,
                    config.protection.kdf,
                );
                let store = match uploads {
                    Some(u) => store.with_uploads(u),
                    None => store,
                };
                // Issue 13: uploaded CSKs are kept in the durable store, sealed.
                let key = match store.uploads() {
                    Some(_) => config.store.at_rest_key()?,
                    None => None,
                };
                Ok(Arc::new(match key {
                    Some(key) => store.with_at_rest(key),
                    None => store,
                }))
            })
            .transpose()?;
        if let Some(start) = config.admin.manual_clock_start {
            state.clock = state::Clock::manual(mcx_model::UnixTime(start));
        }
        // Issue 13: the durable state first (deadlines re-armed from now; what ran out while
        // the server was down ends now, and that is persisted too), then the lab CSKs, which
        // keep the IMPU they were tied to before the restart.
        let store_config = config.store.clone();
        let opened = tokio::task::spawn_blocking(move || crate::store::Store::open(&store_config))
            .await
            .context("opening the store")??;
        state.store = opened.store.clone();
        // If anything below fails (restoring the CSKs, binding a listener), the store is closed
        // again (its file lock released), so that a caller may try again in the same process.
        let mut close_on_error = CloseOnDrop(opened.store.clone());
        let shared_location = opened.shared.as_ref().map(|s| s.location().to_owned());
        if shared_location.is_some() && state.machine.policy().max_devices_per_mc_id.is_some() {
            // Q-18 counts bindings across IMPUs: no per-IMPU compare-and-set guards that count.
            anyhow::bail!("[policy] max_devices_per_mc_id cannot be enforced across instances: unset it, or use [store] shared = false (one instance)");
        }
        state.shared_store = opened.shared;
        if shared_location.is_some() && keys.as_ref().is_some_and(|k| k.uploads().is_some()) {
            // The key store is per instance: it reads the store's sealed CSKs only here.
            tracing::warn!("[store] shared = true: a CSK uploaded through another instance is known here only after this instance restarts; until then a token protected under it is refused here (403/101)");
        }
        // The config's CSKs (`[[protection.csk]]`) are the ones provisioned: listed before the
        // uploaded ones join the key store, so that no upload is ever re-fed as provisioned.
        let provisioning = keys.as_ref().map(|k| k.provisioning()).unwrap_or_default();
        // The uploaded CSKs' keys back into the key store, for the ties the snapshot holds.
        if let Some(k) = &keys {
            let done = k
                .restore(&opened.snapshot.csks, &opened.sealed)
                .with_context(|| {
                    format!(
                        "restoring the uploaded CSKs of {} (at-rest key {})",
                        opened
                            .store
                            .as_ref()
                            .map_or_else(String::new, |s| s.path().display().to_string()),
                        config.store.key_file().display()
                    )
                })?;
            if done.restored > 0 {
                tracing::info!(done.restored, "uploaded CSKs restored from the store");
            }
            if done.untied + done.shadowed + done.no_key > 0 {
                tracing::warn!(?done, "stored uploaded CSKs not restored: without a tie in the store, shadowed by a configured CSK, or nothing to open them with (MIKEY-SAKKE off)");
            }
        } else if !opened.sealed.is_empty() {
            tracing::warn!(
                stored = opened.sealed.len(),
                "the store holds uploaded CSKs, but token protection is off: they are not used"
            );
        }
        // The key store before the load, so that a CSK whose binding ran out while the server
        // was down (dropped by the load's tick) is forgotten (zeroized) there too.
        state.keys = keys.clone();
        let loaded = opened.snapshot.impus.len();
        let now = state.clock.now();
        state.step(now, mcx_model::Input::Load(Box::new(opened.snapshot)));
        for input in provisioning {
            state.step(mcx_model::UnixTime(0), input);
        }
        let store = opened.store.map(|s| (s, loaded));
        let shared = Arc::new(Mutex::new(state));
        // Port 0 on TCP follows the UDP port when both are asked on the same address, so that
        // one "host:port" serves both transports. The OS picks the UDP port among free UDP
        // ports only; when that port is taken on TCP (another listener, a client's ephemeral
        // port), the pair is picked again (a few times).
        let mut attempt = 0;
        let (udp, tcp) = loop {
            attempt += 1;
            let mut udp = Vec::new();
            for addr in &config.sip.udp {
                udp.push(bind_udp(*addr).with_context(|| format!("binding SIP UDP {addr}"))?);
            }
            let mut tcp = Vec::new();
            let mut follow_failed = None;
            for addr in &config.sip.tcp {
                let (addr, follows) = match (addr.port(), udp.first()) {
                    (0, Some(u)) if u.local_addr()?.ip() == addr.ip() => (u.local_addr()?, true),
                    _ => (*addr, false),
                };
                match TcpListener::bind(addr).await {
                    Ok(l) => tcp.push(l),
                    Err(e)
                        if follows && e.kind() == std::io::ErrorKind::AddrInUse && attempt < 8 =>
                    {
                        follow_failed = Some(addr);
                        break;
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!("binding SIP TCP {addr}")))
                    }
                }
            }
            match follow_failed {
                None => break (udp, tcp),
                Some(addr) => {
                    tracing::debug!(%addr, attempt, "TCP port taken; picking another pair")
                }
            }
        };
        let mut tls = Vec::new();
        for t in &config.sip.tls {
            let acceptor =
                TlsListener::new(t).with_context(|| format!("SIP TLS listener {}", t.listen))?;
            let listener = TcpListener::bind(t.listen)
                .await
                .with_context(|| format!("binding SIP TLS {}", t.listen))?;
            tls.push((listener, acceptor));
        }
        let admin = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding admin {addr}"))?,
            ),
            None => None,
        };
        let http = match config.http.listen.filter(|_| config.http.enabled) {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding HTTP resource servers {addr}"))?;
                let tls = match (&config.http.tls_cert, &config.http.tls_key) {
                    (Some(cert), Some(key)) => {
                        Some(crate::resource::tls::server_config(cert, key)?)
                    }
                    _ => None,
                };
                let ctx = crate::resource::Ctx::new(
                    &config.http,
                    &config.token.data_dir,
                    config.token.accept_rel13_scope,
                    validator.clone(),
                    shared.clone(),
                );
                Some((listener, tls, Arc::new(ctx)))
            }
            None => None,
        };
        let ctx = Ctx {
            pipeline: Arc::new(Pipeline::new(config.sip.clone(), validator, keys, shared)),
            sip: config.sip.clone(),
            limiter: RateLimiter::new(&config.limits),
            limits: config.limits.clone(),
            vitals: Arc::new(Vitals::default()),
        };
        close_on_error.0 = None;
        Ok(Server {
            ctx: Arc::new(ctx),
            store,
            shared_store: shared_location.map(|l| (std::path::PathBuf::from(l), loaded)),
            http,
            udp,
            tcp,
            tls,
            admin,
            lab_controls: config.admin.lab_controls || config.admin.manual_clock_start.is_some(),
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> BoundAddrs {
        BoundAddrs {
            udp: self
                .udp
                .iter()
                .filter_map(|s| s.local_addr().ok())
                .collect(),
            tcp: self
                .tcp
                .iter()
                .filter_map(|s| s.local_addr().ok())
                .collect(),
            tls: self
                .tls
                .iter()
                .filter_map(|(s, _)| s.local_addr().ok())
                .collect(),
            admin: self.admin.as_ref().and_then(|s| s.local_addr().ok()),
            http: self.http.as_ref().and_then(|(s, _, _)| s.local_addr().ok()),
            http_tls: self.http.as_ref().is_some_and(|(_, tls, _)| tls.is_some()),
        }
    }

    /// The state the machine lives in (tests read it directly).
    pub fn shared(&self) -> Arc<Mutex<Shared>> {
        self.ctx.pipeline.shared()
    }

    /// The durable store's kind, where it lives and the number of IMPUs loaded from it
    /// (`None`: `memory`).
    pub fn store_info(&self) -> Option<(&'static str, std::path::PathBuf, usize)> {
        self.store
            .as_ref()
            .map(|(s, n)| (s.kind(), s.path().to_owned(), *n))
            .or_else(|| {
                self.shared_store
                    .as_ref()
                    .map(|(p, n)| ("postgres (shared)", p.clone(), *n))
            })
    }

    /// The runtime counters and listener health.
    pub fn vitals(&self) -> Arc<Vitals> {
        self.ctx.vitals.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and returns. Every listener and
    /// the tick timer run supervised: a task that ends before shutdown (a panic outside a
    /// request) is logged, counted, shown `down` in `/healthz`, and started again after
    /// `[limits] listener_restart_ms`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let ctx = self.ctx;
        for socket in self.udp {
            let socket = Arc::new(socket);
            let name = format!("udp {}", socket.local_addr()?);
            let id = ctx.vitals.add_listener(name.clone());
            let (c, stop) = (ctx.clone(), stop_rx.clone());
            tasks.spawn(supervise(
                ctx.clone(),
                id,
                name,
                stop_rx.clone(),
                move || udp::serve(socket.clone(), c.clone(), id, stop.clone()),
            ));
        }
        let streams = self
            .tcp
            .into_iter()
            .map(|l| (l, None))
            .chain(self.tls.into_iter().map(|(l, t)| (l, Some(t))));
        for (listener, tls) in streams {
            let listener = Arc::new(listener);
            let kind = if tls.is_some() { "tls" } else { "tcp" };
            let name = format!("{kind} {}", listener.local_addr()?);
            let id = ctx.vitals.add_listener(name.clone());
            let (c, stop) = (ctx.clone(), stop_rx.clone());
            let tls = tls.map(Arc::new);
            tasks.spawn(supervise(
                ctx.clone(),
                id,
                name,
                stop_rx.clone(),
                move || {
                    serve_stream_listener(
                        listener.clone(),
                        tls.clone(),
                        c.clone(),
                        id,
                        stop.clone(),
                    )
                },
            ));
        }
        if let Some(listener) = self.admin {
            let router = admin::router(ctx.pipeline.clone(), ctx.vitals.clone(), self.lab_controls);
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let graceful = async move { stopped(&mut stop).await };
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(graceful)
                    .await
                {
                    tracing::error!(error = %e, "admin view failed");
                }
            });
        }
        if let Some((listener, tls, ctx)) = self.http {
            let router = crate::resource::router(ctx);
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let graceful = async move { stopped(&mut stop).await };
                let served = match tls {
                    None => {
                        axum::serve(listener, router)
                            .with_graceful_shutdown(graceful)
                            .await
                    }
                    Some(tls) => match crate::resource::tls::TlsListener::new(listener, tls) {
                        Ok(l) => {
                            axum::serve(l, router)
                                .with_graceful_shutdown(graceful)
                                .await
                        }
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP resource servers failed");
                }
            });
        }
        let id = ctx.vitals.add_listener("tick".into());
        let (shared, stop) = (ctx.pipeline.shared(), stop_rx.clone());
        tasks.spawn(supervise(
            ctx.clone(),
            id,
            "tick".into(),
            stop_rx.clone(),
            move || tick(shared.clone(), stop.clone()),
        ));
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        if let Some((store, _)) = self.store {
            // What is queued is written before the process ends.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        Ok(())
    }
}

/// Runs the task `start` makes until shutdown, starting it again whenever it ends before (a
/// panic that escaped the per-request guards, or a listener loop that gave up).
async fn supervise<F, Fut>(
    ctx: Arc<Ctx>,
    id: ListenerId,
    name: String,
    mut stop: watch::Receiver<bool>,
    start: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let pause = Duration::from_millis(ctx.limits.listener_restart_ms);
    loop {
        ctx.vitals.set_up(id, true);
        let ended = tokio::spawn(start()).await;
        if *stop.borrow() {
            return;
        }
        let why = match ended {
            Ok(()) => "the listener task ended".to_owned(),
            Err(e) if e.is_panic() => format!("panic: {}", panic_message(&*e.into_panic())),
            Err(e) => e.to_string(),
        };
        tracing::error!(listener = %name, why, "listener stopped; restarting it in {pause:?}");
        ctx.vitals.listener_failed(id, &why);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Feeds [`mcx_model::Input::Tick`] when a deadline has passed (one-second resolution: every
/// deadline is in whole seconds).
async fn tick(shared: Arc<Mutex<Shared>>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => {
                shared.lock().unwrap_or_else(PoisonError::into_inner).tick_if_due();
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

fn request_panicked(
    ctx: &Ctx,
    id: ListenerId,
    src: SocketAddr,
    panic: &(dyn std::any::Any + Send),
) {
    let why = panic_message(panic);
    tracing::error!(%src, why, "handling a request panicked (a bug): dropped it, the worker carries on");
    ctx.vitals.worker_panicked(id, &why);
}

/// Kernel receive buffer asked for on SIP UDP sockets: a burst of requests arriving while the
/// workers check signatures waits here instead of being dropped (and retransmitted by the
/// client 500 ms later). The kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// TS 33.180 5.4: the server's CSK-upload material from `[mikey]` (a lab community is created
/// on first start, as the lab IdMS key is), off the runtime's threads.
async fn mikey_receiver(config: &ServerConfig) -> anyhow::Result<crate::mikey::UploadReceiver> {
    let dir = config.mikey.kms_dir.clone().unwrap_or_else(|| {
        config
            .http
            .data_dir
            .as_ref()
            .unwrap_or(&config.token.data_dir)
            .join("kms")
    });
    let identity = config
        .mikey
        .identity
        .clone()
        .unwrap_or_else(|| config.sip.server_uri.clone());
    let create = config
        .mikey
        .lab_create
        .unwrap_or_else(|| config.token.trusts_lab());
    let now = config.admin.manual_clock_start.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    tokio::task::spawn_blocking(move || {
        let (certs, own) = crate::mikey::open_lab(&dir, &identity, create, now)?;
        crate::mikey::UploadReceiver::new(certs, &own, Some(&dir))
    })
    .await
    .context("[mikey]")?
    .context("[mikey]")
}

/// How long a SIP UDP thread waits for a datagram before it looks whether the listener is
/// stopping; also the longest a send waits for room in a full send buffer.
const UDP_POLL: Duration = Duration::from_millis(100);

/// A SIP UDP socket for [`udp::serve`]'s threads: blocking, with [`UDP_POLL`] timeouts.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(%addr, error = %e, "could not enlarge the UDP receive buffer");
    }
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(UDP_POLL))?;
    socket.set_write_timeout(Some(UDP_POLL))?;
    Ok(socket.into())
}

/// Open connections per untrusted address.
type PerSource = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// What an open stream connection holds of the listener's limits; released on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    per_source: Option<(PerSource, IpAddr)>,
    vitals: Arc<Vitals>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.vitals
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((table, ip)) = &self.per_source {
            let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = t.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    t.remove(ip);
                }
            }
        }
    }
}

/// A TCP or TLS listener: accepts within the connection cap (and, for untrusted addresses, the
/// per-source cap and rate), serves each connection in its own task, and reaps finished
/// connection tasks as they end (a panicked one is counted).
async fn serve_stream_listener(
    listener: Arc<TcpListener>,
    tls: Option<Arc<TlsListener>>,
    ctx: Arc<Ctx>,
    id: ListenerId,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(ctx.limits.tcp_max_connections.max(1)));
    // Open connections per untrusted address: at most one entry per open connection, so bounded
    // by the connection cap.
    let per_source: PerSource = Arc::default();
    let mut connections = JoinSet::new();
    let mut stop_accepting = stop.clone();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, src)) => {
                    let Some(slot) = admit_connection(&ctx, &slots, &per_source, src) else {
                        // Dropping the stream closes it at once.
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let trusted_ip = ctx.sip.is_trusted(src.ip());
                    connections.spawn(serve_connection(
                        stream,
                        src,
                        trusted_ip,
                        tls.clone(),
                        ctx.clone(),
                        slot,
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        let why = panic_message(&*e.into_panic());
                        tracing::error!(why, "a connection task panicked (a bug): connection closed");
                        ctx.vitals.worker_panicked(id, &why);
                    }
                }
            }
            _ = stopped(&mut stop_accepting) => break,
        }
    }
    connections.shutdown().await;
}

fn admit_connection(
    ctx: &Arc<Ctx>,
    slots: &Arc<Semaphore>,
    per_source: &PerSource,
    src: SocketAddr,
) -> Option<Slot> {
    let trusted = ctx.sip.is_trusted(src.ip());
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        ctx.vitals.refused(Refusal::Cap);
        tracing::debug!(%src, "refused a connection: tcp_max_connections reached");
        return None;
    };
    if !ctx.admit(src, trusted) {
        ctx.vitals.refused(Refusal::Rate);
        return None;
    }
    let per_source = if trusted {
        None
    } else {
        let mut t = per_source.lock().unwrap_or_else(PoisonError::into_inner);
        let n = t.entry(src.ip()).or_default();
        if *n >= ctx.limits.tcp_max_connections_per_source {
            drop(t);
            ctx.vitals.refused(Refusal::PerSource);
            tracing::debug!(%src, "refused a connection: tcp_max_connections_per_source reached");
            return None;
        }
        *n += 1;
        Some((per_source.clone(), src.ip()))
    };
    use std::sync::atomic::Ordering::Relaxed;
    ctx.vitals.connections_accepted.fetch_add(1, Relaxed);
    ctx.vitals.connections_open.fetch_add(1, Relaxed);
    Some(Slot {
        _permit: permit,
        per_source,
        vitals: ctx.vitals.clone(),
    })
}

/// One accepted connection: the TLS handshake (bounded in time) when the listener is TLS, then
/// the SIP stream.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    trusted_ip: bool,
    tls: Option<Arc<TlsListener>>,
    ctx: Arc<Ctx>,
    _slot: Slot,
    mut stop: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        serve_stream(stream, src, Transport::Tcp, trusted_ip, &ctx, stop).await;
        return;
    };
    let handshake = tokio::time::timeout(
        Duration::from_millis(ctx.limits.tls_handshake_timeout_ms),
        tls.acceptor.accept(stream),
    );
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                ctx.vitals
                    .tls_handshake_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(%src, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ctx.vitals.timed_out(Timeout::Handshake);
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    let trusted_peer = tls.trusts(
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first()),
    );
    tracing::debug!(%src, trusted_peer, "TLS connection");
    let transport = Transport::Tls { trusted_peer };
    serve_stream(
        stream,
        src,
        transport,
        trusted_ip || trusted_peer,
        &ctx,
        stop,
    )
    .await;
}

/// The SIP stream of one connection (RFC 3261 18.3 framing). Closed when idle for
/// `tcp_idle_timeout_secs`, when a begun message is not complete within
/// `tcp_message_timeout_ms`, after a framing error, or at shutdown. Messages from an untrusted
/// peer pass the per-source rate limit (excess is dropped).
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    src: SocketAddr,
    transport: Transport,
    trusted: bool,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let idle = Duration::from_secs(ctx.limits.tcp_idle_timeout_secs.max(1));
    let message_limit = Duration::from_millis(ctx.limits.tcp_message_timeout_ms.max(1));
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    // When the message now being received must be complete.
    let mut message_deadline: Option<tokio::time::Instant> = None;
    loop {
        let (deadline, kind) = match message_deadline {
            Some(d) => (d, Timeout::Message),
            None => (tokio::time::Instant::now() + idle, Timeout::Idle),
        };
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match r {
                Err(_) => {
                    ctx.vitals.timed_out(kind);
                    tracing::debug!(%src, ?kind, "closing a connection: timeout");
                    return;
                }
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => n,
            },
            _ = stopped(&mut stop) => return,
        };
        framer.push(&buf[..n]);
        let mut completed = false;
        while let Some(next) = framer.next() {
            completed = true;
            let reply = match next {
                Ok(_) if !ctx.admit(src, trusted) => None,
                Ok(frame) => ctx.pipeline.process(frame, src, transport),
                Err(e) => ctx
                    .pipeline
                    .framing_error(&e, src, transport)
                    .map(pipeline::Reply::now),
            };
            if let Some(reply) = reply {
                // Issue 13: persist, then send.
                ctx.pipeline.durable(reply.wait_for).await;
                if stream.write_all(&reply.bytes).await.is_err() {
                    return;
                }
            }
        }
        if framer.is_poisoned() {
            // The stream cannot be re-synchronised after a framing error (RFC 3261 18.3).
            tracing::info!(%src, "closing a stream connection after a framing error");
            let _ = stream.shutdown().await;
            return;
        }
        if completed {
            message_deadline = None;
        }
        if framer.buffered() > 0 && message_deadline.is_none() {
            message_deadline = Some(tokio::time::Instant::now() + message_limit);
        }
    }
}

/// Closes the store when dropped (an error path of [`Server::bind`]).
struct CloseOnDrop(Option<Arc<crate::store::Store>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.close();
        }
    }
}

/// Resolves once shutdown has been signalled.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
