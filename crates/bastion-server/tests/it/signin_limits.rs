//! Sign-in limits (SPEC A8, T5): only failures count, in-flight reservations keep parallel guesses
//! under the limit, a credential-stuffing address is throttled, and every number holds on two
//! nodes sharing PostgreSQL. Each scenario runs on SQLite (one node) and on PostgreSQL (two
//! nodes, attempts alternating between them).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bastion_core::clock::ManualClock;
use bastion_core::{Clock, SystemClock};
use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use serde_json::json;

use crate::{assert_problem, client};

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "not the password at all";
const FIFTEEN_MINUTES_MS: i64 = 15 * 60_000;

/// One SQLite node, or two nodes sharing one fresh PostgreSQL database; all on `clock`.
/// `None` when PostgreSQL is asked for and its tests are skipped.
async fn nodes(postgres: bool, clock: Arc<ManualClock>) -> Option<Vec<TestApp>> {
    let tweak = |c: &mut bastion_server::Config| {
        // The generic per-IP request rate (T5's GCRA) is another limit with its own tests.
        c.rate_limit.per_ip_per_second = 0;
        // Client addresses come from X-Forwarded-For, as a trusted proxy would send them.
        c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        // Accounts are made by sign-up alone; the mail round trip has its own tests.
        c.auth.require_verified_email = false;
    };
    let first = spawn_app(
        Spawn {
            postgres,
            clock: Some(clock.clone()),
            ..Default::default()
        },
        tweak,
    )
    .await?;
    if !postgres {
        return Some(vec![first]);
    }
    let (url, key) = (
        first.config.database_url.clone(),
        first.data_dir.path().join("master.key"),
    );
    let second = spawn_app(
        Spawn {
            clock: Some(clock),
            ..Default::default()
        },
        |c| {
            tweak(c);
            c.database_url = url;
            std::fs::copy(&key, c.data_dir.join("master.key")).unwrap();
        },
    )
    .await
    .unwrap();
    Some(vec![first, second])
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemClock.now_ms()))
}

async fn sign_up(app: &TestApp, email: &str) {
    let res = client()
        .post(app.url("/v1/auth/signup"))
        .header("x-forwarded-for", "192.0.2.1")
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{email}");
}

async fn login(app: &TestApp, ip: &str, email: &str, password: &str) -> reqwest::Response {
    client()
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Audit rows with `action`, read straight from the database (sign-in events belong to no org).
pub(crate) async fn audit_rows(app: &TestApp, action: &str) -> Vec<String> {
    let url = &app.config.database_url;
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT details::text FROM bastion.audit_events WHERE action = $1 ORDER BY seq",
        )
        .bind(action)
        .fetch_all(&pool)
        .await
        .unwrap()
    } else {
        let url = format!(
            "sqlite://{}",
            app.config.data_dir.join("bastion.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT details FROM audit_events WHERE action = ?1 ORDER BY seq")
            .bind(action)
            .fetch_all(&pool)
            .await
            .unwrap()
    }
}

/// The status of a sign-in answer, after checking that its problem code is the one that status
/// must carry: a 401 is `invalid_credentials`, a 429 `login_locked` with a `Retry-After`.
pub(crate) async fn checked(res: reqwest::Response) -> u16 {
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key("retry-after");
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    match status {
        401 => assert_eq!(body["code"], "invalid_credentials", "{body}"),
        429 => {
            assert_eq!(body["code"], "login_locked", "{body}");
            assert!(retry_after, "429 without Retry-After");
        }
        _ => {}
    }
    status
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// `n` concurrent sign-ins, the i-th to `apps[i % len]` as `attempt(i)` = (client address,
/// email, password); their statuses in order.
async fn burst(
    apps: &[TestApp],
    n: usize,
    attempt: impl Fn(usize) -> (String, &'static str, &'static str),
) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = apps[i % apps.len()].url("/v1/auth/login");
            let (ip, email, password) = attempt(i);
            tokio::spawn(async move {
                let res = client()
                    .post(url)
                    .header("x-forwarded-for", ip)
                    .json(&json!({ "email": email, "password": password }))
                    .send()
                    .await
                    .unwrap();
                checked(res).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// Sixteen clients signing in with the right passwords to 64 accounts from one address for 20 s:
/// nothing is refused, however many sign-ins that is.
async fn honest_storm(postgres: bool) {
    let Some(apps) = nodes(postgres, clock()).await else {
        return;
    };
    let apps = Arc::new(apps);
    let emails: Arc<Vec<String>> =
        Arc::new((0..64).map(|i| format!("staff{i}@example.com")).collect());
    for email in emails.iter() {
        sign_up(&apps[0], email).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (apps, emails, next) = (apps.clone(), emails.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            let mut ok = 0usize;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let app = &apps[(n + c) % apps.len()];
                let res = login(app, "198.51.100.20", &emails[n % emails.len()], PASSWORD).await;
                if res.status() == 200 {
                    ok += 1;
                } else {
                    refused.push(res.status().as_u16());
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, Vec::new());
    for c in clients {
        let (o, r) = c.await.unwrap();
        ok += o;
        refused.extend(r);
    }
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    // Well past every limit: 100 per address and 10 per account per window.
    assert!(ok > 640, "only {ok} sign-ins in 20 s");
    // And the address and every account still sign in.
    for email in emails.iter().take(3) {
        assert_eq!(
            login(&apps[0], "198.51.100.20", email, PASSWORD)
                .await
                .status(),
            200
        );
    }
    assert!(audit_rows(&apps[0], "login.locked").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_t5_sixteen_clients_signing_in_honestly_to_64_accounts_from_one_address_are_never_refused()
 {
    honest_storm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_t5_x3_the_honest_storm_is_never_refused_on_two_nodes_sharing_postgres() {
    honest_storm(true).await;
}

/// Twenty concurrent wrong passwords for one account: at most 10 are verified, the rest 429;
/// the right password is then refused until the lock ends, and the lock is audited once.
async fn wrong_password_burst(postgres: bool) {
    let clock = clock();
    let Some(apps) = nodes(postgres, clock.clone()).await else {
        return;
    };
    sign_up(&apps[0], "victim@example.com").await;
    let started_ms = clock.now_ms();
    let statuses = burst(&apps, 20, |i| {
        (format!("203.0.113.{}", i + 1), "victim@example.com", WRONG)
    })
    .await;
    assert_eq!(count(&statuses, 401), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 10, "{statuses:?}");
    for (i, app) in apps.iter().enumerate() {
        let res = login(app, "198.51.100.1", "victim@example.com", PASSWORD).await;
        assert_problem(res, 429, "login_locked").await;
        clock.advance_ms(if i == 0 {
            FIFTEEN_MINUTES_MS - 2_000
        } else {
            0
        });
    }
    let res = login(
        apps.last().unwrap(),
        "198.51.100.1",
        "victim@example.com",
        PASSWORD,
    )
    .await;
    assert_problem(res, 429, "login_locked").await;
    clock.advance_ms(2_000);
    for app in apps.iter() {
        let res = login(app, "198.51.100.1", "victim@example.com", PASSWORD).await;
        assert_eq!(res.status(), 200, "the lock ended");
    }
    let locks = audit_rows(&apps[0], "login.locked").await;
    assert_eq!(locks.len(), 1, "one audit row per lock: {locks:?}");
    // U1: the lock's record says which limit locked, from where, and until when.
    let lock: serde_json::Value = serde_json::from_str(&locks[0]).unwrap();
    assert_eq!(lock["limit"], "account", "{lock}");
    assert!(
        lock["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("203.0.113.")),
        "{lock}"
    );
    assert_eq!(lock["until_ms"], started_ms + FIFTEEN_MINUTES_MS, "{lock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_twenty_concurrent_wrong_passwords_verify_ten_and_lock_the_account_until_the_lock_ends()
{
    wrong_password_burst(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_x3_twenty_concurrent_wrong_passwords_on_two_nodes_verify_ten_and_lock_the_account() {
    wrong_password_burst(true).await;
}

/// 200 concurrent attempts on one account, right and wrong passwords interleaved: never more
/// than 10 wrong ones are verified, whatever the successes in between do.
async fn mixed_burst(postgres: bool) {
    let Some(apps) = nodes(postgres, clock()).await else {
        return;
    };
    sign_up(&apps[0], "busy@example.com").await;
    let statuses = burst(&apps, 200, |i| {
        let password = if i % 2 == 0 { PASSWORD } else { WRONG };
        ("198.51.100.30".to_owned(), "busy@example.com", password)
    })
    .await;
    assert!(
        statuses.iter().all(|s| [200, 401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(count(&statuses, 401) <= 10, "{statuses:?}");
    assert!(count(&statuses, 200) >= 1, "{statuses:?}");
    // The wrong ones that were verified are exactly the failures counted: the account is locked.
    let res = login(&apps[0], "198.51.100.31", "busy@example.com", PASSWORD).await;
    assert_eq!(count(&statuses, 401), 10, "{statuses:?}");
    assert_problem(res, 429, "login_locked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_200_concurrent_right_and_wrong_passwords_never_verify_more_than_ten_wrong() {
    mixed_burst(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_x3_200_concurrent_right_and_wrong_passwords_on_two_nodes_never_verify_more_than_ten_wrong()
 {
    mixed_burst(true).await;
}

/// One address failing against 50 different accounts is throttled after the 20th (the default
/// `login_ip_max_accounts`), even for an account whose password it has; another address is not.
async fn credential_stuffing(postgres: bool) {
    let clock = clock();
    let Some(apps) = nodes(postgres, clock.clone()).await else {
        return;
    };
    sign_up(&apps[0], "real@example.com").await;
    let stuffer = "203.0.113.99";
    let mut statuses = Vec::new();
    for i in 0..50 {
        let app = &apps[i % apps.len()];
        let res = login(app, stuffer, &format!("user{i}@example.com"), WRONG).await;
        statuses.push(checked(res).await);
    }
    assert_eq!(
        statuses,
        [vec![401; 20], vec![429; 30]].concat(),
        "throttled after 20 distinct accounts"
    );
    let res = login(apps.last().unwrap(), stuffer, "real@example.com", PASSWORD).await;
    assert_problem(res, 429, "login_locked").await;
    // Another address: unaffected, for the right password and for a wrong one.
    let other = "198.51.100.77";
    assert_eq!(
        login(&apps[0], other, "real@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    assert_problem(
        login(apps.last().unwrap(), other, "user0@example.com", WRONG).await,
        401,
        "invalid_credentials",
    )
    .await;
    // Failing the same account again and again is the account limit's business, not this one.
    let repeat = "198.51.100.78";
    for _ in 0..9 {
        assert_eq!(
            login(&apps[0], repeat, "user30@example.com", WRONG)
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        login(&apps[0], repeat, "real@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    let locks = audit_rows(&apps[0], "login.locked").await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert!(locks[0].contains("ip_accounts"), "{locks:?}");
    // The throttle ends with its lock.
    clock.advance_ms(FIFTEEN_MINUTES_MS);
    assert_eq!(
        login(&apps[0], stuffer, "real@example.com", PASSWORD)
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_t5_one_address_failing_against_50_accounts_is_throttled_and_another_is_not() {
    credential_stuffing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_t5_x3_credential_stuffing_across_two_nodes_is_throttled_and_another_address_is_not() {
    credential_stuffing(true).await;
}

/// Twelve concurrent correct sign-ins to one account (more than its limit of 10): all succeed;
/// the two beyond the limit wait for a place instead of being refused.
async fn twelve_right_at_once(postgres: bool) {
    let Some(apps) = nodes(postgres, clock()).await else {
        return;
    };
    sign_up(&apps[0], "popular@example.com").await;
    let statuses = burst(&apps, 12, |_| {
        ("198.51.100.40".to_owned(), "popular@example.com", PASSWORD)
    })
    .await;
    assert_eq!(statuses, vec![200; 12]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_twelve_concurrent_correct_sign_ins_to_one_account_all_succeed() {
    twelve_right_at_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_x3_twelve_concurrent_correct_sign_ins_on_two_nodes_all_succeed() {
    twelve_right_at_once(true).await;
}

/// A client that sends its own `X-Forwarded-For` line, before the one its proxy adds, does not
/// choose its address: every line is one list, so its failures all count against the address
/// the proxy saw, and the distinct-accounts rule throttles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_a8_a_client_supplied_forwarded_for_line_cannot_escape_the_address_limits() {
    let Some(apps) = nodes(false, clock()).await else {
        return;
    };
    let app = &apps[0];
    let mut statuses = Vec::new();
    for i in 0..21 {
        let res = client()
            .post(app.url("/v1/auth/login"))
            // The client's own line, a new address each time, then the proxy's line.
            .header("x-forwarded-for", format!("192.0.2.{}", i + 1))
            .header("x-forwarded-for", "203.0.113.50")
            .json(&json!({ "email": format!("someone{i}@example.com"), "password": WRONG }))
            .send()
            .await
            .unwrap();
        statuses.push(checked(res).await);
    }
    assert_eq!(statuses, [vec![401; 20], vec![429]].concat());
    // The real address is throttled whichever first line it sends.
    assert_problem(
        login(app, "203.0.113.50", "someone0@example.com", WRONG).await,
        429,
        "login_locked",
    )
    .await;
}
