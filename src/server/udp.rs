//! The SIP UDP hot path (issue 15): a request never queues behind another IMPU's signature check.
//!
//! Per datagram, on the socket's receive task, in arrival order: the per-source rate limit;
//! frame and parse; the transaction check ([`Pipeline::admit`]: a retransmission is answered or
//! absorbed here and costs no signature check); a place in its IMPU's order
//! ([`Sequencer::reserve`]); then
//! - a PUBLISH with a body goes to a verifier thread, which checks its token signatures and CSK
//!   upload ([`Pipeline::verify`]) in parallel with everything else, then runs its ordered step
//!   ([`Pipeline::step`]: edge, machine, response) once every earlier request of its IMPU has run;
//! - any other request (REGISTER, a PUBLISH refresh or removal, …) goes to a step thread, which
//!   runs its ordered step as soon as every earlier request of its IMPU has run.
//!
//! Whoever completes a request runs the requests of its IMPU that waited behind it. So RFC 3903's
//! in-order processing per IMPU holds; a REGISTER waits for a signature check only when its
//! own IMPU has one pending, and never in a queue of signature checks (verifiers and step threads
//! are separate, one of each per core: the non-crypto work is spread over the cores too). The
//! machine itself stays behind the server's one lock, held for the machine's step only: its
//! decisions span IMPUs (an MC service ID's devices, IMPU changes), so it is not split.
//!
//! Persist, then send (issue 13): a response whose machine state is durable already is sent from
//! the thread that made it; any other waits on the runtime for its sequence number (the group
//! commit it joined), so no thread here blocks on the disk.
//!
//! A panic while handling one request (verifying or stepping) is caught: logged, counted
//! (`/metrics`, `/healthz`), the request dropped, and its IMPU's later requests still run.
//!
//! Bounded: at most [`MAX_PENDING`] admitted requests are in flight per socket; the receive task
//! then stops reading and the kernel's socket buffer holds the rest (SIP retransmits what it
//! drops).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::pipeline::{self, Admission, Admitted, Parsed, Reply, Transport, Verdicts};
use super::sequencer::Sequencer;
use super::vitals::{Fault, ListenerId};
use super::{request_panicked, stopped, Ctx};
use crate::sip::framing::frame_datagram;
use crate::sip::SipRequest;

/// Largest UDP datagram read; bigger messages are truncated by the kernel and then refused.
const UDP_BUFFER: usize = 65_535;

/// Requests in verification, in their ordered step, or waiting behind one, per socket.
pub const MAX_PENDING: usize = 4096;

/// An admitted request on its way to its ordered step.
struct Job {
    req: Box<SipRequest>,
    src: SocketAddr,
    admitted: Admitted,
    /// What the verifier checked ahead; `Err(())`: verifying panicked, drop the request.
    verdicts: Result<Option<Verdicts>, ()>,
    /// Held while the request is pending.
    _permit: OwnedSemaphorePermit,
}

type Task = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads (one per core) fed in FIFO order: the work stays off the runtime's
/// workers, so the receive task keeps reading.
struct Pool {
    queue: Option<mpsc::Sender<Task>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn start(name: &str) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || loop {
                        let task = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            rx.recv()
                        };
                        match task {
                            Ok(task) => task(),
                            Err(_) => return, // the receive task is gone
                        }
                    })?,
            );
        }
        Ok(Pool {
            queue: Some(tx),
            threads,
        })
    }

    fn submit(&self, task: Task) {
        if let Some(q) = &self.queue {
            let _ = q.send(task);
        }
    }

    /// Lets the queued work finish, then joins the threads.
    fn finish(mut self) {
        self.queue = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends a datagram now, from any thread; a full socket buffer hands it to the runtime.
fn send_now(socket: &Arc<UdpSocket>, rt: &tokio::runtime::Handle, bytes: Vec<u8>, dst: SocketAddr) {
    match socket.try_send_to(&bytes, dst) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let socket = socket.clone();
            rt.spawn(async move { super::send_udp(&socket, &bytes, dst).await });
        }
        Err(e) => tracing::warn!(%dst, error = %e, "UDP send failed"),
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
        send_now(socket, rt, reply.bytes, dst);
    } else {
        let (socket, ctx) = (socket.clone(), ctx.clone());
        rt.spawn(async move {
            ctx.pipeline.durable(reply.wait_for).await;
            super::send_udp(&socket, &reply.bytes, dst).await;
        });
    }
}

/// What a pool thread needs to finish a request.
struct Out {
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    rt: tokio::runtime::Handle,
    id: ListenerId,
}

impl Out {
    /// The ordered step of one request, and its response. A panic drops the request only.
    fn run(&self, job: Job) {
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

/// Serves one UDP socket until `stop`.
pub(super) async fn serve(
    socket: Arc<UdpSocket>,
    ctx: Arc<Ctx>,
    id: ListenerId,
    mut stop: watch::Receiver<bool>,
) {
    let (verifiers, steppers) = match (Pool::start("sip-verify"), Pool::start("sip-step")) {
        (Ok(v), Ok(s)) => (v, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "could not start the SIP worker threads");
            return;
        }
    };
    let rt = tokio::runtime::Handle::current();
    let out = Arc::new(Out {
        ctx: ctx.clone(),
        socket: socket.clone(),
        rt: rt.clone(),
        id,
    });
    let order: Arc<Sequencer<Job>> = Arc::new(Sequencer::new());
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
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
        // Outside the per-request guard on purpose: this takes the whole listener down.
        ctx.vitals.faults.trip(Fault::ListenerPanic);
        if !ctx.admit(src, ctx.sip.is_trusted(src.ip())) {
            continue;
        }
        // Frame, parse and the transaction check, in arrival order.
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
            Ok(Err(Some(reply))) => {
                send_reply(&ctx, &socket, &rt, reply, src);
                continue;
            }
            Ok(Err(None)) => continue,
            Err(panic) => {
                request_panicked(&ctx, id, src, &*panic);
                continue;
            }
        };
        let key = pipeline::shard_key(&req);
        let verify = ctx.pipeline.needs_verification(&req, src, Transport::Udp);
        // A full pending set pushes back on this loop (and so on the socket buffer).
        let permit = match pending.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let job = Job {
            req,
            src,
            admitted,
            verdicts: Ok(None),
            _permit: permit,
        };
        let ticket = order.reserve(key);
        let (order, out) = (order.clone(), out.clone());
        if verify {
            verifiers.submit(Box::new(move || {
                let mut job = job;
                job.verdicts = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    out.ctx.vitals.faults.trip(Fault::WorkerPanic);
                    out.ctx
                        .pipeline
                        .verify(&job.req, job.src, Transport::Udp, job.admitted.now)
                }))
                .map(Some)
                .map_err(|panic| request_panicked(&out.ctx, out.id, job.src, &*panic));
                order.fulfil(ticket, job, |j| out.run(j));
            }));
        } else {
            steppers.submit(Box::new(move || {
                order.fulfil(ticket, job, |j| out.run(j));
            }));
        }
    }
    // Let what was admitted finish (the verifiers run the waiting requests too).
    let _ = tokio::task::spawn_blocking(move || {
        verifiers.finish();
        steppers.finish();
    })
    .await;
}
