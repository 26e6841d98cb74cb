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
