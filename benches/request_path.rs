//! Micro benchmark of the request path, from a parsed request to the
//! response head: room lookup, health decision, Location.
//!
//! Run with `cargo bench --bench request_path`. The servers are local
//! stand-in Jitsi servers (`tests/it/support/standin.rs`), so the health states
//! are real probe results, read the way a request reads them.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use roomgate::config::Config;
use roomgate::decision::choose;
use roomgate::forwarded::Peer;
use roomgate::gateway::{ConfigSource, Gateway};
use roomgate::health::State;
use roomgate::http::{handle, Body};
use roomgate::routes::{location, room_segment, Lookup};
use support::{Mode, StandIn};

/// Runs a future that must not wait (the steady-state request path never
/// does) to completion with a no-op waker: nothing of an executor is timed.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn request(target: &str) -> Request<()> {
    Request::get(target)
        .header("host", "gateway.example")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        )
        .body(())
        .expect("valid request")
}

fn response(gw: &Gateway, target: &str) -> Response<Body> {
    // A direct client on loopback, as in a bench on one machine.
    let peer = Peer::Tcp(([127, 0, 0, 1], 40000).into());
    now(handle(gw, &peer, request(target)))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (gw, _primary, _backup) = rt.block_on(async {
        let primary = StandIn::http(Mode::Healthy).await;
        let backup = StandIn::http(Mode::Healthy).await;
        let yaml = format!(
            "servers:\n  primary: {{ url: '{}' }}\n  backup: {{ url: '{}' }}\nrooms:\n  \
             Lounge: {{ servers: [primary, backup], aliases: [treff] }}\n  \
             Cave: {{ servers: [primary, backup] }}\nunlisted: {{ allow: true, servers: [primary] }}\n",
            primary.url(),
            backup.url()
        );
        let config = Config::parse(&yaml, "bench.yaml", Path::new(".")).expect("config");
        let gw = Gateway::start(config, ConfigSource::File("bench.yaml".into()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !gw.is_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gw.is_ready(), "stand-ins did not answer the first probes");
        (gw, primary, backup)
    });
    let gw: Arc<Gateway> = gw;
    let _guard = rt.enter();
    let lounge = response(&gw, "/Lounge");
    assert_eq!(lounge.status(), 302);

    let mut g = c.benchmark_group("request_path");
    g.bench_function("redirect /Lounge", |b| b.iter(|| response(&gw, "/Lounge")));
    g.bench_function("redirect alias /TREFF/", |b| {
        b.iter(|| response(&gw, "/TREFF/"))
    });
    g.bench_function("redirect with query", |b| {
        b.iter(|| response(&gw, "/Lounge?lang=de"))
    });
    g.bench_function("redirect unlisted room", |b| {
        b.iter(|| response(&gw, "/some-other-room"))
    });
    g.bench_function("not found", |b| b.iter(|| response(&gw, "/no.such.room")));
    g.finish();

    let mut g = c.benchmark_group("parts");
    let snap = gw.snapshot();
    g.bench_function("lookup", |b| {
        b.iter(|| {
            let name = room_segment(std::hint::black_box("/lounge/")).expect("segment");
            matches!(snap.routes.lookup(name), Lookup::Room(_))
        })
    });
    let states = [State::Down, State::Up];
    g.bench_function("decision", |b| {
        b.iter(|| choose(std::hint::black_box(states), snap.routes.when_all_down))
    });
    g.bench_function("health states", |b| b.iter(|| now(snap.choose(0..2))));
    g.bench_function("location with query", |b| {
        b.iter(|| location("https://meet.example", "Lounge", Some("lang=de")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
