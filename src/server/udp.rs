//! The SIP UDP hot path (issue 15): no hand-over between threads for a request, and no request
//! queued behind another IMPU's signature check.
//!
//! One thread per core serves the socket, leader/follower style. The thread holding the
//! receive lock (the leader) reads the next datagram and, in arrival order, applies the
//! per-source rate limit, frames and parses it, runs the transaction check
//! ([`Pipeline::admit`]: a retransmission is answered or absorbed here and costs no signature
//! check) and takes the request's place in its IMPU's order ([`Sequencer::reserve`]). It then
//! gives up the lock, so another thread reads the next datagram, and carries on with the request
//! it read:
//! - a PUBLISH with a body has its token signatures and CSK upload checked ([`Pipeline::verify`]),
//!   in parallel with everything the other threads do;
//! - its ordered step ([`Pipeline::step`]: edge, machine, response) runs once every earlier
//!   request of its IMPU has run.
//!
//! Whoever completes a request runs the requests of its IMPU that waited behind it. So RFC
//! 3903's in-order processing per IMPU holds, a REGISTER waits for a signature check
//! only when its own IMPU has one pending, and a request costs no thread hand-over or wake-up
//! of its own: under load the threads go from one datagram to the next without sleeping. (The
//! design before it, a receive task handing each request to a pool thread, spent more CPU on
//! those hand-overs than on the signature checks: docs/benchmarks.md.) The machine itself
//! stays behind the server's one lock, held for the machine's step only: its decisions span
//! IMPUs (an MC service ID's devices, IMPU changes), so it is not split.
//!
//! Persist, then send (issue 13): a response whose machine state is durable already is sent by
//! the thread that made it; any other waits on the runtime for its sequence number (the group
//! commit it joined), so no thread here blocks on the disk.
//!
//! A panic while handling one request (verifying or stepping) is caught: logged, counted
//! (`/metrics`, `/healthz`), the request dropped, and its IMPU's later requests still run. A
//! panic outside a request ends the listener, which its supervisor starts again.
//!
//! Bounded: at most [`MAX_PENDING`] admitted requests are in flight per socket; the leader then
//! stops reading and the kernel's socket buffer holds the rest (SIP retransmits what it drops).
//! The socket is blocking with a short receive timeout ([`super::UDP_POLL`]), so a stop is seen
//! within it.

use std::net::{SocketAddr, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::pipeline::{self, Admission, Admitted, Parsed, Reply, Transport, Verdicts};
use super::sequencer::Sequencer;
use super::vitals::{Fault, ListenerId};
use super::{request_panicked, stopped, Ctx};
use crate::sip::framing::frame_datagram;
use crate::sip::SipRequest;

/// Largest UDP datagram read; bigger messages are truncated by the kernel and then refused.
const UDP_BUFFER: usize = 65_535;

/// Requests being verified, in their ordered step, or waiting behind one, per socket.
pub const MAX_PENDING: usize = 4096;

/// An admitted request on its way to its ordered step.
struct Job {
    req: Box<SipRequest>,
    src: SocketAddr,
    admitted: Admitted,
    /// What was checked ahead; `Err(())`: verifying panicked, drop the request.
    verdicts: Result<Option<Verdicts>, ()>,
    /// Held while the request is pending.
    _permit: OwnedSemaphorePermit,
}

/// Sends a datagram now, from any thread (the socket's send timeout bounds the wait for room in
/// a full send buffer; a reply that still finds none is dropped, and the client retransmits).
pub(super) fn send_datagram(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, dst) {
        tracing::warn!(%dst, error = %e, "UDP send failed");
    }
}

/// Sends a reply once the state it answers for is durable (issue 13: persist, then send).
fn send_reply(
    ctx: &Arc<Ctx>,
    socket: &Arc<UdpSocket>,
    rt: &tokio::runtime::Handle,
    reply: Reply,
    dst: SocketAddr,
) {
    if ctx.pipeline.is_durable(reply.wait_for) {
        send_datagram(socket, &reply.bytes, dst);
    } else {
        let (socket, ctx) = (socket.clone(), ctx.clone());
        rt.spawn(async move {
            ctx.pipeline.durable(reply.wait_for).await;
            send_datagram(&socket, &reply.bytes, dst);
        });
    }
}

/// One UDP socket's listener, shared by its threads.
struct Listener {
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    rt: tokio::runtime::Handle,
    id: ListenerId,
    /// The receive lock, with the one buffer the leader reads into.
    receive: Mutex<Box<[u8]>>,
    order: Sequencer<Job>,
    pending: Arc<Semaphore>,
    stop: AtomicBool,
}

/// What the leader did with a datagram.
enum Read {
    /// Nothing more to do (answered, absorbed, refused, or nothing read).
    Done,
    /// An admitted request, its place in its IMPU's order, and whether to verify it.
    Request(Job, super::sequencer::Ticket, bool),
    /// The listener is stopping.
    Stop,
}

impl Listener {
    /// One thread's loop: lead (read one datagram), then handle what was read.
    fn run(&self) {
        loop {
            match self.lead() {
                Read::Stop => return,
                Read::Done => {}
                Read::Request(mut job, ticket, verify) => {
                    if verify {
                        job.verdicts = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            self.ctx.vitals.faults.trip(Fault::WorkerPanic);
                            self.ctx.pipeline.verify(
                                &job.req,
                                job.src,
                                Transport::Udp,
                                job.admitted.now,
                            )
                        }))
                        .map(Some)
                        .map_err(|panic| request_panicked(&self.ctx, self.id, job.src, &*panic));
                    }
                    self.order.fulfil(ticket, job, |j| self.step(j));
                }
            }
        }
    }

    /// Under the receive lock, in arrival order: read, rate limit, frame, parse, the
    /// transaction check and a place in the IMPU's order.
    fn lead(&self) -> Read {
        let mut buf = self.receive.lock().unwrap_or_else(PoisonError::into_inner);
        if self.stop.load(Ordering::Relaxed) {
            return Read::Stop;
        }
        let (n, src) = match self.socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Read::Done
            }
            Err(e) => {
                // ICMP port unreachable from an earlier send shows up here on some systems.
                tracing::debug!(error = %e, "UDP receive error");
                return Read::Done;
            }
        };
        let ctx = &self.ctx;
        // Outside the per-request guard on purpose: this takes the whole listener down.
        ctx.vitals.faults.trip(Fault::ListenerPanic);
        if !ctx.admit(src, ctx.sip.is_trusted(src.ip())) {
            return Read::Done;
        }
        let admitted = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let req = match frame_datagram(&buf[..n]) {
                Ok(frame) => match ctx.pipeline.parse(&frame, src) {
                    Parsed::Request(req) => req,
                    Parsed::Reply(r) => return Err(r.map(Reply::now)),
                },
                Err(e) => {
                    return Err(ctx
                        .pipeline
                        .framing_error(&e, src, Transport::Udp)
                        .map(Reply::now))
                }
            };
            match ctx.pipeline.admit(&req, src, Transport::Udp) {
                Admission::New(admitted) => Ok((req, admitted)),
                Admission::Absorb => Err(None),
                Admission::Retransmit(reply) => Err(Some(reply)),
            }
        }));
        let (req, admitted) = match admitted {
            Ok(Ok(x)) => x,
            Ok(Err(reply)) => {
                drop(buf);
                if let Some(reply) = reply {
                    send_reply(ctx, &self.socket, &self.rt, reply, src);
                }
                return Read::Done;
            }
            Err(panic) => {
                request_panicked(ctx, self.id, src, &*panic);
                return Read::Done;
            }
        };
        let key = pipeline::shard_key(&req);
        let verify = ctx.pipeline.needs_verification(&req, src, Transport::Udp);
        // A full pending set stops the reading (and so pushes back on the socket buffer).
        let permit = match self.pending.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                match self.rt.block_on(self.pending.clone().acquire_owned()) {
                    Ok(p) => p,
                    Err(_) => return Read::Stop,
                }
            }
            Err(TryAcquireError::Closed) => return Read::Stop,
        };
        let ticket = self.order.reserve(key);
        let job = Job {
            req,
            src,
            admitted,
            verdicts: Ok(None),
            _permit: permit,
        };
        Read::Request(job, ticket, verify)
    }

    /// The ordered step of one request, and its response. A panic drops the request only.
    fn step(&self, job: Job) {
        let Ok(verdicts) = job.verdicts else {
            return;
        };
        let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.ctx.vitals.faults.trip(Fault::WorkerPanic);
            self.ctx
                .pipeline
                .step(&job.req, job.src, Transport::Udp, job.admitted, verdicts)
        }));
        match stepped {
            Ok(Some(reply)) => send_reply(&self.ctx, &self.socket, &self.rt, reply, job.src),
            Ok(None) => {}
            Err(panic) => request_panicked(&self.ctx, self.id, job.src, &*panic),
        }
    }
}

/// Serves one UDP socket until `stop`, on one thread per core. A thread that panics outside a
/// request ends the listener (the panic is passed on to the supervisor).
pub(super) async fn serve(
    socket: Arc<UdpSocket>,
    ctx: Arc<Ctx>,
    id: ListenerId,
    mut stop: watch::Receiver<bool>,
) {
    let listener = Arc::new(Listener {
        ctx,
        socket,
        rt: tokio::runtime::Handle::current(),
        id,
        receive: Mutex::new(vec![0u8; UDP_BUFFER].into_boxed_slice()),
        order: Sequencer::new(),
        pending: Arc::new(Semaphore::new(MAX_PENDING)),
        stop: AtomicBool::new(false),
    });
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (l, ended_tx) = (listener.clone(), ended_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("sip-udp-{i}"))
            .spawn(move || {
                let ran = std::panic::catch_unwind(AssertUnwindSafe(|| l.run()));
                l.stop.store(true, Ordering::Relaxed);
                let _ = ended_tx.send(ran.err());
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::error!(error = %e, "could not start the SIP UDP threads");
                listener.stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    drop(ended_tx);
    let panicked = tokio::select! {
        _ = stopped(&mut stop) => None,
        first = ended.recv() => first.flatten(),
    };
    // Every thread finishes the request it holds (and those waiting behind it), then stops
    // within one receive timeout.
    listener.stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    if let Some(panic) = panicked {
        std::panic::resume_unwind(panic);
    }
}
