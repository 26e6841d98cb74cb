//! Issue 13: several `mcx-authz serve` instances on one PostgreSQL (`[store] backend =
//! "postgres"`, `shared = true`). Two in-process servers share a throw-away cluster (`initdb` in
//! a scratch dir, loopback port, stopped by PID; the schema made by `mcx-authz store migrate`).
//! FAILS when PostgreSQL is not installed (`bash .ci/install-deps.sh`).
//!
//! - Bind through A, refresh with the ETag through B (200), de-register through B: A then
//!   refuses the refresh (412) and the token (403, not registered), and shows no binding.
//! - Concurrent PUBLISHes of two users for one (IMPU, client) through both instances: conflicts
//!   happen and are re-run; exactly one of the issued SIP-ETags is current in the end, on both
//!   instances, and it names the MC service ID the store holds.
//! - A proptest: requests through either instance, one at a time, get the statuses one
//!   `mcx_model::Machine` fed the same requests predicts (two instances on one store behave as
//!   one server), and the store ends as that machine's snapshot.

mod common;
mod external;

use std::sync::Mutex;

use common::{publish_auth, publish_empty, third_party_register, TestServer};
use external::Cluster;
use mcx_authz::store::{Backend, StoreConfig};

fn shared_store(url: &str) -> StoreConfig {
    StoreConfig {
        backend: Backend::Postgres,
        url: Some(url.to_owned()),
        shared: true,
        ..StoreConfig::default()
    }
}

/// Instances A and B on the cluster's database; B trusts A's lab IdMS.
fn two_instances(cluster: &Cluster) -> (TestServer, TestServer) {
    let url = cluster.url();
    let a = TestServer::start(|c| c.store = shared_store(&url));
    let token = a.lab.validator_config();
    let b = TestServer::start(|c| {
        c.store = shared_store(&url);
        c.token = token;
    });
    (a, b)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn rows(cluster: &Cluster, impu: &str) -> i64 {
    let mut client = postgres::Client::connect(&cluster.url(), postgres::NoTls).expect("connect");
    client
        .query_one("SELECT count(*) FROM mcx_impu WHERE impu = $1", &[&impu])
        .expect("count")
        .get(0)
}

#[test]
fn bind_through_a_refresh_and_deregister_through_b_then_a_sees_no_binding() {
    let cluster = Cluster::start();
    let (a, b) = two_instances(&cluster);
    let (ca, cb) = (a.udp_client(), b.udp_client());
    let impu = "sip:alice@ims.example.org";
    let mc_id = "sip:alice@mcx.example.org";
    assert_eq!(ca.send(&third_party_register(impu, 3600)).status, 200);
    let token = a.token(mc_id, 3600);
    let bound = ca.send(&publish_auth(impu, &token, "client-1", None, 3600));
    assert_eq!(bound.status, 200, "{}", bound.raw);
    let e1 = bound.etag().expect("SIP-ETag");
    assert_eq!(rows(&cluster, impu), 1);

    // B never saw this IMPU: it reads the row before deciding, so A's ETag refreshes.
    let refreshed = cb.send(&publish_empty(impu, &e1, 3600));
    assert_eq!(refreshed.status, 200, "{}", refreshed.raw);
    let e2 = refreshed.etag().expect("SIP-ETag");
    assert_ne!(e1, e2);
    assert!(
        b.bindings()
            .iter()
            .any(|v| v.impu == impu && v.mc_id == mc_id && v.etag.as_deref() == Some(&*e2)),
        "{:?}",
        b.bindings()
    );
    // A's cached tag is stale: A reads first, and the old tag is no longer current (RFC 3903).
    assert_eq!(ca.send(&publish_empty(impu, &e1, 3600)).status, 412);

    // De-registration through B ends every binding of the IMPU (S-3) in the store.
    assert_eq!(cb.send(&third_party_register(impu, 0)).status, 200);
    assert_eq!(rows(&cluster, impu), 0);
    // A still holds the binding in memory until it reads the IMPU again ...
    assert!(a.bindings().iter().any(|v| v.impu == impu));
    // ... which any request for it does: the current tag is refused, and so is the token.
    assert_eq!(ca.send(&publish_empty(impu, &e2, 3600)).status, 412);
    let refused = ca.send(&publish_auth(impu, &token, "client-1", None, 3600));
    assert_eq!(refused.status, 403, "{}", refused.raw);
    assert!(a.bindings().iter().all(|v| v.impu != impu));
    assert_eq!(rows(&cluster, impu), 0);
    assert!(metric(&a.metrics(), "mcx_store_reloaded_impus_total") >= 1);
}

#[test]
fn concurrent_publishes_through_both_instances_leave_one_current_binding() {
    let cluster = Cluster::start();
    let (a, b) = two_instances(&cluster);
    let impu = "sip:carol@ims.example.org";
    assert_eq!(
        a.udp_client()
            .send(&third_party_register(impu, 3600))
            .status,
        200
    );
    let users = ["sip:u1@mcx.example.org", "sip:u2@mcx.example.org"];
    let tokens: Vec<String> = users.iter().map(|u| a.token(u, 3600)).collect();
    // (ETag, MC service ID) of every 200.
    let issued = Mutex::new(Vec::new());
    let servers = [a.udp, b.udp];
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (issued, tokens) = (&issued, &tokens);
            scope.spawn(move || {
                let client = common::UdpClient::new(servers[t % 2]);
                for round in 0..15 {
                    let u = (t + round) % 2;
                    let r = client.send(&publish_auth(impu, &tokens[u], "client-1", None, 3600));
                    assert_eq!(r.status, 200, "{}", r.raw);
                    issued
                        .lock()
                        .unwrap()
                        .push((r.etag().expect("SIP-ETag"), users[u]));
                }
            });
        }
    });
    let issued = issued.into_inner().unwrap();
    assert_eq!(issued.len(), 60);
    // Exactly one issued tag is current, whichever instance is asked; every other one is 412.
    let mut current = Vec::new();
    for (i, (etag, mc_id)) in issued.iter().enumerate() {
        let via = if i % 2 == 0 { &a } else { &b };
        let r = via.udp_client().send(&publish_empty(impu, etag, 3600));
        match r.status {
            200 => current.push((r.etag().unwrap(), *mc_id)),
            412 => {}
            s => panic!("refresh of {etag}: {s}"),
        }
    }
    assert_eq!(current.len(), 1, "{current:?}");
    let (tag, mc_id) = current.pop().unwrap();
    // The store holds that MC service ID with that (refreshed) tag, and both instances agree
    // once they read the IMPU (any request for it).
    let record = stored(&cluster, impu).expect("the IMPU's row");
    assert_eq!(record.bindings.len(), 1, "{record:?}");
    assert_eq!(record.bindings[0].2.mc_id.as_str(), mc_id);
    let stored_tag = record.bindings[0]
        .2
        .publication
        .as_ref()
        .unwrap()
        .etag
        .clone();
    assert_eq!(stored_tag.as_str(), tag);
    for s in [&a, &b] {
        assert_eq!(
            s.udp_client()
                .send(&publish_empty(impu, "stale", 3600))
                .status,
            412
        );
        let views: Vec<_> = s
            .bindings()
            .into_iter()
            .filter(|v| v.impu == impu)
            .collect();
        assert_eq!(views.len(), 1, "{views:?}");
        assert_eq!(views[0].mc_id, mc_id);
        assert_eq!(views[0].etag.as_deref(), Some(&*tag));
    }
    let (ma, mb) = (a.metrics(), b.metrics());
    let conflicts =
        metric(&ma, "mcx_store_conflicts_total") + metric(&mb, "mcx_store_conflicts_total");
    let reloads = metric(&ma, "mcx_store_reloaded_impus_total")
        + metric(&mb, "mcx_store_reloaded_impus_total");
    eprintln!("60 concurrent PUBLISHes: {conflicts} conflict(s), {reloads} reload(s)");
    assert!(reloads > 0, "the instances reloaded each other's writes");
    assert_eq!(
        metric(&ma, "mcx_store_gave_up_total") + metric(&mb, "mcx_store_gave_up_total"),
        0
    );
}

/// The IMPU's aggregate as the store holds it.
fn stored(cluster: &Cluster, impu: &str) -> Option<mcx_model::ImpuRecord> {
    let mut client = postgres::Client::connect(&cluster.url(), postgres::NoTls).expect("connect");
    let row = client
        .query_opt("SELECT record FROM mcx_impu WHERE impu = $1", &[&impu])
        .expect("select")?;
    Some(serde_json::from_value(row.get(0)).expect("an ImpuRecord"))
}

/// One request of the proptest, for IMPU `impu` (0..2) of the case.
#[derive(Clone, Debug)]
enum Op {
    Register {
        impu: usize,
        expires: u32,
    },
    Publish {
        impu: usize,
        user: usize,
        client: usize,
    },
    /// Body-less refresh with the last SIP-ETag this IMPU got (or a tag never issued).
    Refresh {
        impu: usize,
    },
    /// Removal (`Expires: 0`) with the last SIP-ETag.
    Remove {
        impu: usize,
    },
}

fn op() -> impl proptest::strategy::Strategy<Value = (Op, bool)> {
    use proptest::prelude::*;
    let op = prop_oneof![
        (0..2usize, prop_oneof![Just(0u32), Just(3600u32)])
            .prop_map(|(impu, expires)| Op::Register { impu, expires }),
        (0..2usize, 0..2usize, 0..2usize).prop_map(|(impu, user, client)| Op::Publish {
            impu,
            user,
            client
        }),
        (0..2usize).prop_map(|impu| Op::Refresh { impu }),
        (0..2usize).prop_map(|impu| Op::Remove { impu }),
    ];
    (op, any::<bool>())
}

/// Requests through either instance, one at a time, against one `Machine` fed the same
/// requests: the statuses are the machine's, and the store ends as the machine's snapshot (for
/// registrations and (service, client, MC service ID) of every binding; SIP-ETags are drawn by
/// each side and mapped).
#[test]
fn interleaved_requests_through_both_instances_answer_as_one_machine() {
    use mcx_model::{
        AssertedIdentity, Authorization, ClientId, ETag, EventPackage, IfMatch, Impu, Input,
        Machine, McId, Policy, Protection, Publish, PublishBody, PublishTarget, RegisterTarget,
        Service, ServiceSet, ThirdPartyRegister, TokenId, TokenProtection, TokenVerdict,
        VerifiedClaims,
    };
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let cluster = Cluster::start();
    let (a, b) = two_instances(&cluster);
    let case = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..14), |ops| {
            // Fresh IMPUs and tokens per case (shrinking runs again): the cases share the store
            // and the replay window.
            let n = case.fetch_add(1, Ordering::Relaxed);
            let impus: Vec<String> = (0..2)
                .map(|i| format!("sip:c{n}i{i}@ims.example.org"))
                .collect();
            let users: Vec<String> = (0..2)
                .map(|u| format!("sip:c{n}u{u}@mcx.example.org"))
                .collect();
            let tokens: Vec<String> = users.iter().map(|u| a.token(u, 3600)).collect();
            let now = a.now();
            let mut oracle = Machine::new(Policy {
                token_protection: TokenProtection::Optional,
                ..Policy::default()
            });
            // Last SIP-ETag per IMPU: (the servers', the oracle's).
            let mut tags: Vec<Option<(String, ETag)>> = vec![None, None];
            let mut fresh = 0u32;
            let (ca, cb) = (a.udp_client(), b.udp_client());
            for (op, via_b) in ops {
                fresh += 1;
                let fresh_etag = ETag::new(format!("oracle-{fresh}"));
                let client = if via_b { &cb } else { &ca };
                let trusted = |i: usize| AssertedIdentity::Trusted(Impu::new(impus[i].clone()));
                let publish = |i: usize, if_match: IfMatch, expires: u32, body: PublishBody| {
                    Input::Publish(Publish {
                        target: PublishTarget::Service(Service::Mcptt),
                        event: EventPackage::PocSettings,
                        impu: trusted(i),
                        if_match,
                        expires: Some(expires),
                        body,
                        key_upload: None,
                        fresh_etag: fresh_etag.clone(),
                    })
                };
                let tag_of = |i: usize| -> (String, IfMatch) {
                    match &tags[i] {
                        Some((s, o)) => (s.clone(), IfMatch::One(o.clone())),
                        None => (
                            "never-issued".into(),
                            IfMatch::One(ETag::new("never-issued")),
                        ),
                    }
                };
                let (msg, input, impu) = match op {
                    Op::Register { impu, expires } => (
                        third_party_register(&impus[impu], expires),
                        Input::ThirdPartyRegister(ThirdPartyRegister {
                            target: RegisterTarget::Ours,
                            impu: trusted(impu),
                            expires: Some(expires),
                            services: None,
                            embedded: Vec::new(),
                        }),
                        impu,
                    ),
                    Op::Publish { impu, user, client } => {
                        let client_id = format!("client-{client}");
                        let mc_id = McId::new(users[user].clone());
                        let claims = VerifiedClaims {
                            mcptt_id: Some(mc_id.clone()),
                            mcvideo_id: Some(mc_id.clone()),
                            mcdata_id: Some(mc_id),
                            scopes: ServiceSet::ALL,
                            exp: now.plus(3600),
                            token_id: TokenId::new(format!("jti-{user}")),
                        };
                        (
                            publish_auth(&impus[impu], &tokens[user], &client_id, None, 3600),
                            publish(
                                impu,
                                IfMatch::Absent,
                                3600,
                                PublishBody::Authorization(Authorization {
                                    token: TokenVerdict::Verified(claims),
                                    protection: Protection::Clear,
                                    client_id: ClientId::new(client_id.clone()),
                                    settings: None,
                                }),
                            ),
                            impu,
                        )
                    }
                    Op::Refresh { impu } | Op::Remove { impu } => {
                        let expires = if matches!(op, Op::Remove { .. }) {
                            0
                        } else {
                            3600
                        };
                        let (server_tag, if_match) = tag_of(impu);
                        (
                            publish_empty(&impus[impu], &server_tag, expires),
                            publish(impu, if_match, expires, PublishBody::Empty),
                            impu,
                        )
                    }
                };
                let got = client.send(&msg);
                let predicted = oracle
                    .handle(now, input)
                    .into_iter()
                    .find_map(|o| match o {
                        mcx_model::Output::Response(r) => Some(r),
                        _ => None,
                    })
                    .expect("a response");
                proptest::prop_assert_eq!(
                    got.status,
                    predicted.status(),
                    "{:?} via {}: {}",
                    op,
                    if via_b { "B" } else { "A" },
                    got.raw
                );
                if let (Some(s), Some(o)) = (got.etag(), predicted.etag.clone()) {
                    tags[impu] = Some((s, o));
                }
            }
            // The store ends as the oracle's snapshot (tags aside).
            let shape = |r: &mcx_model::ImpuRecord| {
                (
                    r.registration.is_some(),
                    r.bindings
                        .iter()
                        .map(|(s, c, b)| (*s, c.as_str().to_owned(), b.mc_id.as_str().to_owned()))
                        .collect::<Vec<_>>(),
                )
            };
            let snapshot = oracle.snapshot();
            for impu in &impus {
                let want = snapshot
                    .impus
                    .iter()
                    .find(|(i, _)| i.as_str() == impu)
                    .map(|(_, r)| shape(r));
                proptest::prop_assert_eq!(
                    stored(&cluster, impu).as_ref().map(shape),
                    want,
                    "{}",
                    impu
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let m = a.metrics() + &b.metrics();
    assert_eq!(metric(&m, "mcx_store_gave_up_total"), 0);
}

/// RFC 3903 across instances: the same current SIP-ETag refreshed through A and B at the same
/// moment succeeds once (the other gets 412): the compare-and-set turns the loser's stale
/// decision into a conflict, a reload, and the 412 one server would give. A blind write would
/// fork the publication (both 200, two "current" tags).
#[test]
fn racing_refreshes_of_one_tag_through_both_instances_succeed_once() {
    let cluster = Cluster::start();
    let (a, b) = two_instances(&cluster);
    let impu = "sip:dave@ims.example.org";
    let ca = a.udp_client();
    assert_eq!(ca.send(&third_party_register(impu, 3600)).status, 200);
    let token = a.token("sip:dave@mcx.example.org", 3600);
    let first = ca.send(&publish_auth(impu, &token, "client-1", None, 3600));
    assert_eq!(first.status, 200);
    let mut tag = first.etag().unwrap();
    let servers = [a.udp, b.udp];
    let clients: Vec<common::UdpClient> =
        servers.iter().map(|s| common::UdpClient::new(*s)).collect();
    for round in 0..30 {
        let barrier = std::sync::Barrier::new(2);
        let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = clients
                .iter()
                .map(|c| {
                    let (barrier, tag) = (&barrier, &tag);
                    scope.spawn(move || {
                        barrier.wait();
                        let r = c.send(&publish_empty(impu, tag, 3600));
                        (r.status, r.etag())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<_> = statuses.iter().filter(|(s, _)| *s == 200).collect();
        assert_eq!(ok.len(), 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().any(|(s, _)| *s == 412),
            "round {round}: {statuses:?}"
        );
        tag = ok[0].1.clone().unwrap();
    }
    let stored_tag = stored(&cluster, impu).unwrap().bindings[0]
        .2
        .publication
        .clone()
        .unwrap()
        .etag;
    assert_eq!(stored_tag.as_str(), tag);
    let conflicts = metric(&a.metrics(), "mcx_store_conflicts_total")
        + metric(&b.metrics(), "mcx_store_conflicts_total");
    eprintln!("30 racing refresh pairs: {conflicts} conflict(s)");
}
