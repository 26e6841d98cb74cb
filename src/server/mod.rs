//! The tokio runtime that drives the machine: UDP and TCP listeners, the tick timer, the admin
//! view and graceful shutdown (after mini-redis). It decides nothing: bytes go through the SIP
//! edge ([`crate::sip`]) and the token validator into a [`mcx_model::Input`], the machine answers,
//! and the answer goes back out as bytes.

pub mod admin;
pub mod config;
pub mod pipeline;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::ServerConfig;
pub use pipeline::{Parsed, Pipeline, Transport};
pub use state::Shared;

use crate::sip::framing::{frame_datagram, StreamFramer};
use crate::sip::SipRequest;
use crate::token::Validator;

/// Largest UDP datagram read; bigger messages are truncated by the kernel and then refused.
const UDP_BUFFER: usize = 65_535;

/// A bound, not yet running server.
pub struct Server {
    pipeline: Arc<Pipeline>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    admin: Option<TcpListener>,
    lab_controls: bool,
}

/// The addresses a [`Server`] actually listens on (ports resolved when 0 was asked for).
#[derive(Clone, Debug)]
pub struct BoundAddrs {
    /// SIP over UDP.
    pub udp: Vec<SocketAddr>,
    /// SIP over TCP.
    pub tcp: Vec<SocketAddr>,
    /// The admin view.
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// Builds the validator and the machine and binds every listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        let policy = config.policy.policy()?;
        let validator = Validator::new(config.token.clone()).context("token validator")?;
        // TS 33.180 clause 9: the CSK store, and the machine told which MC service ID each
        // lab CSK belongs to (TS 33.180 5.4). Under `token_protection = off` nothing is opened.
        let keys = (policy.token_protection != mcx_model::TokenProtection::Off)
            .then(|| -> anyhow::Result<_> {
                Ok(Arc::new(crate::protection::KeyStore::new(
                    config.protection.table()?,
                    config.protection.kdf,
                )))
            })
            .transpose()?;
        let mut state = Shared::new(policy, config.sip.transaction_cache_entries);
        if let Some(k) = &keys {
            for input in k.provisioning() {
                state.machine.handle(mcx_model::UnixTime(0), input);
            }
        }
        state.keys = keys.clone();
        if let Some(start) = config.admin.manual_clock_start {
            state.clock = state::Clock::manual(mcx_model::UnixTime(start));
        }
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
        let admin = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding admin {addr}"))?,
            ),
            None => None,
        };
        Ok(Server {
            pipeline: Arc::new(Pipeline::new(config.sip.clone(), validator, keys, shared)),
            udp,
            tcp,
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
            admin: self.admin.as_ref().and_then(|s| s.local_addr().ok()),
        }
    }

    /// The state the machine lives in (tests read it directly).
    pub fn shared(&self) -> Arc<Mutex<Shared>> {
        self.pipeline.shared()
    }

    /// Serves until `shutdown` resolves, then stops accepting and returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for socket in self.udp {
            tasks.spawn(serve_udp(
                Arc::new(socket),
                self.pipeline.clone(),
                stop_rx.clone(),
            ));
        }
        for listener in self.tcp {
            tasks.spawn(serve_tcp(listener, self.pipeline.clone(), stop_rx.clone()));
        }
        if let Some(listener) = self.admin {
            let router = admin::router(self.pipeline.shared(), self.lab_controls);
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
        tasks.spawn(tick(self.pipeline.shared(), stop_rx.clone()));
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Feeds [`mcx_model::Input::Tick`] when a deadline has passed (one-second resolution: every
/// deadline is in whole seconds).
async fn tick(shared: Arc<Mutex<Shared>>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => {
                shared.lock().unwrap_or_else(|p| p.into_inner()).tick_if_due();
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// One UDP socket: this task frames and parses datagrams in arrival order and hands each request
/// to the worker its IMPU hashes to ([`pipeline::shard_key`]); the workers check tokens and step
/// the machine in parallel, each in arrival order for its IMPUs (RFC 3903 R-35).
async fn serve_udp(
    socket: Arc<UdpSocket>,
    pipeline: Arc<Pipeline>,
    mut stop: watch::Receiver<bool>,
) {
    let workers = udp_workers();
    let mut queues = Vec::with_capacity(workers);
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Box<SipRequest>, SocketAddr)>(UDP_QUEUE);
        queues.push(tx);
        let (socket, pipeline) = (socket.clone(), pipeline.clone());
        tasks.spawn(async move {
            while let Some((req, src)) = rx.recv().await {
                if let Some(bytes) = pipeline.handle(&req, src, Transport::Udp) {
                    send_udp(&socket, &bytes, src).await;
                }
            }
        });
    }
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let (n, src) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable from an earlier send shows up here on some systems.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let parsed = match frame_datagram(&buf[..n]) {
            Ok(frame) => pipeline.parse(&frame, src),
            Err(e) => Parsed::Reply(pipeline.framing_error(&e, src, Transport::Udp)),
        };
        match parsed {
            Parsed::Reply(Some(bytes)) => send_udp(&socket, &bytes, src).await,
            Parsed::Reply(None) => {}
            Parsed::Request(req) => {
                let shard = (pipeline::shard_key(&req) % workers as u64) as usize;
                // A full queue pushes back on this loop (and so on the socket buffer) rather
                // than dropping: the kernel drops, SIP retransmits.
                if queues[shard].send((req, src)).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(queues);
    while tasks.join_next().await.is_some() {}
}

/// Kernel receive buffer asked for on SIP UDP sockets: a burst of requests arriving while the
/// workers check signatures waits here instead of being dropped (and retransmitted by the
/// client 500 ms later). The kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(%addr, error = %e, "could not enlarge the UDP receive buffer");
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Requests waiting per UDP worker.
const UDP_QUEUE: usize = 1024;

/// One UDP worker per core the runtime has (at least one).
fn udp_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn send_udp(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, dst).await {
        tracing::warn!(%dst, error = %e, "UDP send failed");
    }
}

async fn serve_tcp(listener: TcpListener, pipeline: Arc<Pipeline>, stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut stop_accepting = stop.clone();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, src)) => {
                    connections.spawn(serve_connection(stream, src, pipeline.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut stop_accepting) => break,
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(
    mut stream: TcpStream,
    src: SocketAddr,
    pipeline: Arc<Pipeline>,
    mut stop: watch::Receiver<bool>,
) {
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = stopped(&mut stop) => return,
        };
        framer.push(&buf[..n]);
        while let Some(next) = framer.next() {
            let reply = match next {
                Ok(frame) => pipeline.process(frame, src, Transport::Tcp),
                Err(e) => pipeline.framing_error(&e, src, Transport::Tcp),
            };
            if let Some(bytes) = reply {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        if framer.is_poisoned() {
            // The stream cannot be re-synchronised after a framing error (RFC 3261 18.3).
            tracing::info!(%src, "closing TCP connection after framing error");
            return;
        }
    }
}

/// Resolves once shutdown has been signalled.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
