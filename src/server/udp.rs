//! The SIP UDP hot path (issue 15): a request never queues behind another IMPU's signature check.
//!
//! Per datagram, on the socket's receive task, in arrival order: frame and parse; the
//! transaction check ([`Pipeline::admit`]: a retransmission is answered or absorbed here and
//! costs no signature check); a place in its IMPU's order ([`Sequencer::reserve`]); then
//! - a PUBLISH with a body goes to a verifier thread, which checks its token signatures
//!   ([`Pipeline::verify`]) in parallel with everything else, then runs its ordered step
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
//! Bounded: at most [`MAX_PENDING`] admitted requests are in flight; the receive task then stops
//! reading and the kernel's socket buffer holds the rest (SIP retransmits what it drops).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use mcx_model::UnixTime;
use tokio::net::UdpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::pipeline::{self, Admission, Parsed, Pipeline, Transport, Verdicts};
use super::sequencer::Sequencer;
use super::state::TxKey;
use crate::sip::framing::frame_datagram;
use crate::sip::SipRequest;

/// Largest UDP datagram read; bigger messages are truncated by the kernel and then refused.
const UDP_BUFFER: usize = 65_535;

/// Requests in verification or waiting behind one, per socket.
pub const MAX_PENDING: usize = 4096;

/// An admitted request on its way to its ordered step.
struct Job {
    req: Box<SipRequest>,
    src: SocketAddr,
    tx: Option<TxKey>,
    now: UnixTime,
    verdicts: Option<Verdicts>,
    /// Held while the request is pending; `None` on the idle fast path.
    _permit: Option<OwnedSemaphorePermit>,
}

type Task = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads (one per core) fed in FIFO order: work stays off the runtime's
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

/// Sends a response now, from any thread; a full socket buffer hands it to the runtime.
fn send(socket: &Arc<UdpSocket>, rt: &tokio::runtime::Handle, bytes: Vec<u8>, dst: SocketAddr) {
    match socket.try_send_to(&bytes, dst) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let socket = socket.clone();
            rt.spawn(async move {
                if let Err(e) = socket.send_to(&bytes, dst).await {
                    tracing::warn!(%dst, error = %e, "UDP send failed");
                }
            });
        }
        Err(e) => tracing::warn!(%dst, error = %e, "UDP send failed"),
    }
}

/// The ordered step of one request, and its response.
fn run(pipeline: &Pipeline, socket: &Arc<UdpSocket>, rt: &tokio::runtime::Handle, job: Job) {
    if let Some(bytes) = pipeline.step(&job.req, job.src, job.tx, job.now, job.verdicts) {
        send(socket, rt, bytes, job.src);
    }
}

/// Serves one UDP socket until `stop`.
pub async fn serve(
    socket: Arc<UdpSocket>,
    pipeline: Arc<Pipeline>,
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
            _ = super::stopped(&mut stop) => break,
        };
        let req = match frame_datagram(&buf[..n]) {
            Ok(frame) => match pipeline.parse(&frame, src) {
                Parsed::Request(req) => req,
                Parsed::Reply(Some(bytes)) => {
                    send(&socket, &rt, bytes, src);
                    continue;
                }
                Parsed::Reply(None) => continue,
            },
            Err(e) => {
                if let Some(bytes) = pipeline.framing_error(&e, src, Transport::Udp) {
                    send(&socket, &rt, bytes, src);
                }
                continue;
            }
        };
        let (tx, now) = match pipeline.admit(&req, src, Transport::Udp) {
            Admission::New { tx, now } => (tx, now),
            Admission::Absorb => continue,
            Admission::Retransmit(bytes) => {
                send(&socket, &rt, bytes, src);
                continue;
            }
        };
        let key = pipeline::shard_key(&req);
        let verify = pipeline.needs_verification(&req, src);
        // A full pending set pushes back on this loop (and so on the socket buffer).
        let permit = match pending.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let job = Job {
            req,
            src,
            tx,
            now,
            verdicts: None,
            _permit: Some(permit),
        };
        let ticket = order.reserve(key);
        let (pipeline, socket, order, rt) =
            (pipeline.clone(), socket.clone(), order.clone(), rt.clone());
        if verify {
            verifiers.submit(Box::new(move || {
                let mut job = job;
                job.verdicts = Some(pipeline.verify(&job.req, job.src, job.now));
                order.fulfil(ticket, job, |j| run(&pipeline, &socket, &rt, j));
            }));
        } else {
            steppers.submit(Box::new(move || {
                order.fulfil(ticket, job, |j| run(&pipeline, &socket, &rt, j));
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
