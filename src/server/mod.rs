//! The tokio runtime that drives the machine: UDP and TCP listeners, the tick timer, the admin
//! view and graceful shutdown (after mini-redis). It decides nothing: bytes go through the SIP
//! edge ([`crate::sip`]) and the token validator into a [`mcx_model::Input`], the machine answers,
//! and the answer goes back out as bytes.

pub mod admin;
pub mod config;
pub mod pipeline;
pub mod sequencer;
pub mod state;
pub mod udp;

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

use crate::sip::framing::StreamFramer;
use crate::token::Validator;

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
        let mut state = Shared::new(policy, config.sip.transaction_cache_entries);
        if let Some(start) = config.admin.manual_clock_start {
            state.clock = state::Clock::manual(mcx_model::UnixTime(start));
        }
        let shared = Arc::new(Mutex::new(state));
        let mut udp = Vec::new();
        for addr in &config.sip.udp {
            udp.push(bind_udp(*addr).with_context(|| format!("binding SIP UDP {addr}"))?);
        }
        let mut tcp = Vec::new();
        for addr in &config.sip.tcp {
            // Port 0 on TCP follows the UDP port when both are asked on the same address, so
            // that one "host:port" serves both transports.
            let addr = match (addr.port(), udp.first()) {
                (0, Some(u)) if u.local_addr()?.ip() == addr.ip() => u.local_addr()?,
                _ => *addr,
            };
            tcp.push(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding SIP TCP {addr}"))?,
            );
        }
        let admin = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding admin {addr}"))?,
            ),
            None => None,
        };
        Ok(Server {
            pipeline: Arc::new(Pipeline::new(config.sip.clone(), validator, shared)),
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
            tasks.spawn(udp::serve(
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
