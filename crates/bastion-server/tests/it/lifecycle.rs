//! Graceful shutdown and the start-up audit event.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use bastion_store::{AuditStore, Scope};
use bastion_store_sqlite::SqliteStore;
use bastion_testkit::app::{Spawn, spawn_app};
use tokio::sync::oneshot;

use crate::client;

#[tokio::test]
async fn graceful_shutdown_returns_ok_and_closes_the_port() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let addr = app.addr;
    let res = client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await.expect("a clean shutdown");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the port still accepts connections");
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let slot = Arc::new(Mutex::new(Some((entered_tx, release_rx))));
    let hold = Router::new().route(
        "/hold",
        get(move || {
            let slot = slot.clone();
            async move {
                let (entered, release) = slot.lock().unwrap().take().unwrap();
                let _ = entered.send(());
                let _ = release.await;
                "finished"
            }
        }),
    );
    let app = spawn_app(
        Spawn {
            extra: Some(hold),
            ..Default::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    let addr = app.addr;
    let in_flight = tokio::spawn(client().get(app.url("/hold")).send());
    entered_rx.await.unwrap();

    let stopping = tokio::spawn(app.stop());
    // The listener closes while the request is still being handled.
    let mut closed = false;
    for _ in 0..100_000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(closed, "the listener stayed open after shutdown began");
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the request"
    );

    release_tx.send(()).unwrap();
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "finished");
    stopping.await.unwrap().expect("a clean shutdown");
}

#[tokio::test]
async fn u1_server_start_is_recorded_in_the_audit_trail() {
    let app = spawn_app(Spawn::default(), |_| {}).await.unwrap();
    let store = SqliteStore::open_in_dir(app.data_dir.path()).await.unwrap();
    let events = store
        .events_after(&Scope::System("test"), 0, 10)
        .await
        .unwrap();
    let started = events
        .iter()
        .find(|r| r.event.action == "server.started")
        .unwrap_or_else(|| panic!("no server.started event in {events:?}"));
    assert_eq!(started.event.category, "admin");
    assert_eq!(started.event.outcome, "success");
    let details: serde_json::Value = serde_json::from_str(&started.event.details).unwrap();
    assert_eq!(details["backend"], "sqlite");
    assert!(details["version"].is_string(), "{details}");
    drop(store);
    app.stop().await.unwrap();
}
