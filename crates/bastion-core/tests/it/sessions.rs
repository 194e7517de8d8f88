//! Sessions and refresh-token rotation (SPEC A2, A3, A4) on SQLite and PostgreSQL.

use std::sync::Arc;

use bastion_core::audit::AuditLog;
use bastion_core::clock::ManualClock;
use bastion_core::keys::{KeyRing, SharedKeyRing};
use bastion_core::sessions::{Device, SessionError, SessionPolicy, Sessions};
use bastion_core::{Clock, SystemClock};
use bastion_crypto::master::MasterKey;
use bastion_store::{Scope, Store, UserRow};
use secrecy::{ExposeSecret, SecretString};

struct Env {
    sessions: Arc<Sessions>,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    _db: bastion_testkit::stores::TestStore,
}

async fn env(postgres: bool, grace_ms: i64) -> Option<Env> {
    let fresh = bastion_testkit::stores::fresh_store(postgres).await?;
    let store = fresh.store.clone();
    // Access tokens are checked against real time, so the manual clock starts at it.
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let keys = SharedKeyRing::new(
        KeyRing::open(
            store.as_ref(),
            &MasterKey::from_bytes([3; 32]),
            clock.as_ref(),
        )
        .await
        .unwrap(),
    );
    let audit = Arc::new(AuditLog::new(
        store.clone(),
        keys.clone(),
        clock.clone(),
        1000,
    ));
    let user = UserRow {
        id: "usr_1".into(),
        email: "u@example.com".into(),
        email_verified_ms: None,
        password_hash: None,
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    };
    store
        .create_user(&Scope::System("test"), &user)
        .await
        .unwrap();
    let policy = SessionPolicy {
        grace_ms,
        ..SessionPolicy::default()
    };
    let sessions = Arc::new(Sessions::new(
        store.clone(),
        keys,
        audit,
        clock.clone(),
        policy,
    ));
    Some(Env {
        sessions,
        store,
        clock,
        _db: fresh,
    })
}

fn device() -> Device {
    Device {
        name: "Ada's laptop".into(),
        platform: "linux".into(),
        ip: "203.0.113.7".into(),
        user_agent: "test".into(),
    }
}

/// Fires 50 refreshes of `token` at once; returns the successful refresh tokens and the errors.
async fn burst(sessions: &Arc<Sessions>, token: &SecretString) -> (Vec<String>, Vec<SessionError>) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = sessions.clone();
            let t = SecretString::from(token.expose_secret().to_owned());
            tokio::spawn(async move { s.refresh(&t).await })
        })
        .collect();
    let (mut ok, mut err) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(issued) => ok.push(issued.refresh_token.expose_secret().to_owned()),
            Err(e) => err.push(e),
        }
    }
    (ok, err)
}

macro_rules! both_backends {
    ($name:ident, |$e:ident| $grace:expr, $body:block) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $e = env(false, $grace).await.unwrap();
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($e) = env(true, $grace).await else {
                    return;
                };
                $body
            }
        }
    };
}

both_backends!(
    a3_strict_mode_50_concurrent_refreshes_have_one_winner_and_the_family_survives,
    |e| 0,
    {
        let first = e.sessions.start("usr_1", &device()).await.unwrap();
        let (ok, err) = burst(&e.sessions, &first.refresh_token).await;
        assert_eq!(ok.len(), 1, "exactly one refresh succeeds");
        assert!(
            err.iter().all(|x| matches!(x, SessionError::Raced)),
            "{err:?}"
        );
        // The family lives on through the winner only.
        let next = e
            .sessions
            .refresh(&SecretString::from(ok[0].clone()))
            .await
            .unwrap();
        assert!(
            e.sessions
                .authenticate(next.access_token.expose_secret())
                .await
                .is_ok()
        );
    }
);

both_backends!(
    a3_inside_the_grace_window_every_caller_gets_the_same_successor,
    |e| 10_000,
    {
        let first = e.sessions.start("usr_1", &device()).await.unwrap();
        let (ok, err) = burst(&e.sessions, &first.refresh_token).await;
        assert!(err.is_empty(), "{err:?}");
        assert_eq!(ok.len(), 50);
        assert!(ok.iter().all(|t| *t == ok[0]), "one successor for all");
        assert!(
            ok[0].starts_with("bst_rt_") && ok[0].len() >= 7 + 43,
            "prefixed, 256 bits"
        );
        assert!(
            e.sessions
                .refresh(&SecretString::from(ok[0].clone()))
                .await
                .is_ok()
        );
    }
);

both_backends!(
    a3_reuse_after_the_window_revokes_the_family_and_its_access_tokens,
    |e| 10_000,
    {
        let first = e.sessions.start("usr_1", &device()).await.unwrap();
        let second = e.sessions.refresh(&first.refresh_token).await.unwrap();
        let who = e
            .sessions
            .authenticate(second.access_token.expose_secret())
            .await
            .unwrap();
        assert_eq!(
            (who.user_id.as_str(), who.session_id.as_str()),
            ("usr_1", first.session_id.as_str())
        );
        e.clock.advance_ms(11_000);
        assert!(matches!(
            e.sessions.refresh(&first.refresh_token).await,
            Err(SessionError::Reused)
        ));
        assert!(matches!(
            e.sessions
                .authenticate(second.access_token.expose_secret())
                .await,
            Err(SessionError::Ended)
        ));
        assert!(
            matches!(
                e.sessions.refresh(&second.refresh_token).await,
                Err(SessionError::Ended)
            ),
            "the whole family is gone"
        );
        let s = e
            .store
            .session(&Scope::System("test"), &first.session_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.revoked_reason.as_deref(), Some("refresh_reuse"));
        let audit = e
            .store
            .events_after(&Scope::System("test"), 0, 100)
            .await
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|r| r.event.action == "refresh.reuse_detected"
                    && r.event.category == "authentication")
        );
    }
);

both_backends!(
    a3_a4_unknown_tokens_are_refused_and_revocation_ends_access,
    |e| 10_000,
    {
        for bad in ["", "bst_rt_nope", "not-a-token"] {
            assert!(matches!(
                e.sessions
                    .refresh(&SecretString::from(bad.to_owned()))
                    .await,
                Err(SessionError::UnknownToken)
            ));
        }
        let a = e.sessions.start("usr_1", &device()).await.unwrap();
        let b = e.sessions.start("usr_1", &device()).await.unwrap();
        assert_ne!(a.session_id, b.session_id, "one session per device sign-in");
        assert!(e.sessions.revoke(&a.session_id, "logout").await.unwrap());
        assert!(matches!(
            e.sessions
                .authenticate(a.access_token.expose_secret())
                .await,
            Err(SessionError::Ended)
        ));
        assert!(
            e.sessions
                .authenticate(b.access_token.expose_secret())
                .await
                .is_ok(),
            "other devices keep working"
        );
        assert!(matches!(
            e.sessions.refresh(&a.refresh_token).await,
            Err(SessionError::Ended)
        ));
        // A forged access token (another key) is refused before any session lookup.
        let mut parts: Vec<String> = b
            .access_token
            .expose_secret()
            .split('.')
            .map(str::to_owned)
            .collect();
        parts[2] = "AAAA".into();
        assert!(matches!(
            e.sessions.authenticate(&parts.join(".")).await,
            Err(SessionError::InvalidAccess(_))
        ));
    }
);
