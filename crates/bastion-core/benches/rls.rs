//! A scoped read through PostgreSQL row-level security (SPEC R4) beside the same read by the
//! table owner without RLS, same database, same pool, same run.
//!
//! The read is an org's member list (50 rows) and one member's row, as the API does them:
//! `OrgStore::members` / `OrgStore::membership` with a user scope, i.e. a transaction that
//! switches role, installs the signed context, and runs the query under the policies, whose
//! helpers verify the context's HMAC and look up the caller's level and permissions. The
//! baseline runs the identical SQL in a transaction as the owner (the test database's owner is
//! a superuser: no policy applies), decoding the same columns.
//!
//! Runs only when `BASTION_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_core::orgs::{Level, PermissionMap};
use bastion_store::{AccountStore, MemberRow, OrgRow, OrgStore, Scope, UserRow};
use bastion_store_postgres::PgStore;
use bastion_testkit::pg::PgTestDb;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sqlx::Row;

/// The allocator the `bastion` binary ships with, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MEMBERS: usize = 50;
const ROUNDS: usize = 41;
const BATCH: usize = 50;
const ORG: &str = "org_00000000000000000000000000000001";
// The store's own statements (crates/bastion-store-postgres/src/orgs.rs), verbatim.
const LIST_SQL: &str = "SELECT org_id, user_id, email, level, created_ms, updated_ms FROM memberships \
                        WHERE org_id = $1 ORDER BY level DESC, created_ms, user_id";
const ONE_SQL: &str = "SELECT org_id, user_id, email, level, created_ms, updated_ms FROM memberships \
                       WHERE org_id = $1 AND user_id = $2";

fn user(i: usize) -> String {
    format!("usr_{i:032x}")
}

/// An org with `MEMBERS` members at every level, and the default permission map synced.
async fn seed(store: &PgStore) {
    let sys = Scope::System("bench");
    let mut additions = std::collections::BTreeMap::new();
    for (l, perms) in [
        ("viewer", vec!["org.read", "members.read"]),
        ("learner", vec![]),
        ("user", vec![]),
        ("manager", vec!["members.invite"]),
        ("admin", vec!["members.update"]),
        ("super_admin", vec!["org.delete"]),
    ] {
        additions.insert(
            l.to_owned(),
            perms.into_iter().map(str::to_owned).collect::<Vec<_>>(),
        );
    }
    let map = PermissionMap::from_additions(&additions).unwrap();
    store.sync_permissions(&sys, &map.rows()).await.unwrap();
    for i in 0..MEMBERS {
        store
            .create_user(
                &sys,
                &UserRow {
                    id: user(i),
                    email: format!("m{i}@example.com"),
                    email_verified_ms: Some(1),
                    password_hash: None,
                    super_admin: false,
                    created_ms: 1,
                    updated_ms: 1,
                },
            )
            .await
            .unwrap();
    }
    let owner = Scope::User {
        user_id: user(0),
        org_id: None,
    };
    let member = |i: usize, level: Level| MemberRow {
        org_id: ORG.into(),
        user_id: user(i),
        email: format!("m{i}@example.com"),
        level: level.value(),
        created_ms: i as i64,
        updated_ms: i as i64,
    };
    let org = OrgRow {
        id: ORG.into(),
        name: "Bench".into(),
        created_by: user(0),
        created_ms: 1,
        updated_ms: 1,
    };
    store
        .create_org(&owner, &org, &member(0, Level::SuperAdmin))
        .await
        .unwrap();
    // The rest join directly (what accepting an invitation does), spread over the levels.
    let mut tx = store.pool().begin().await.unwrap();
    for i in 1..MEMBERS {
        let m = member(i, Level::ALL[i % Level::ALL.len()]);
        sqlx::query("INSERT INTO memberships (org_id, user_id, email, level, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&m.org_id).bind(&m.user_id).bind(&m.email).bind(m.level).bind(m.created_ms).bind(m.updated_ms)
            .execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// The owner's read: the same SQL in a transaction, the same columns decoded. With `ctx`,
/// the transaction also starts with the store's context statement (as the owner, no role
/// switch), so the only difference left is row-level security itself.
async fn owner_read(pool: &sqlx::PgPool, one: Option<&str>, ctx: Option<&str>) -> usize {
    let mut tx = pool.begin().await.unwrap();
    if let Some(ctx) = ctx {
        sqlx::query("SELECT set_config('bastion.ctx', $1, true)")
            .bind(ctx)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let rows = match one {
        Some(u) => {
            sqlx::query(ONE_SQL)
                .bind(ORG)
                .bind(u)
                .fetch_all(&mut *tx)
                .await
        }
        None => sqlx::query(LIST_SQL).bind(ORG).fetch_all(&mut *tx).await,
    }
    .unwrap();
    tx.commit().await.unwrap();
    rows.iter()
        .map(|r| {
            let m = MemberRow {
                org_id: r.try_get(0).unwrap(),
                user_id: r.try_get(1).unwrap(),
                email: r.try_get(2).unwrap(),
                level: r.try_get(3).unwrap(),
                created_ms: r.try_get(4).unwrap(),
                updated_ms: r.try_get(5).unwrap(),
            };
            std::hint::black_box(m);
        })
        .count()
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(PgTestDb::create()) else {
        eprintln!("rls_read: skipped (set BASTION_TEST_POSTGRES_URL to run it)");
        return;
    };
    let store = rt.block_on(async {
        let s = Arc::new(PgStore::connect(&db.url, 4).await.unwrap());
        seed(&s).await;
        s
    });
    let pool = store.pool().clone();
    // A Manager reading the list; the same Manager reading one row.
    let reader = user(3);
    let scope = Scope::User {
        user_id: reader.clone(),
        org_id: Some(ORG.into()),
    };
    // The control: the scoped read returns every row, so the comparison is like for like.
    rt.block_on(async {
        assert_eq!(store.members(&scope, ORG).await.unwrap().len(), MEMBERS);
        assert_eq!(owner_read(&pool, None, None).await, MEMBERS);
        assert!(
            store
                .membership(&scope, ORG, &user(7))
                .await
                .unwrap()
                .is_some()
        );
        let outsider = Scope::User {
            user_id: user(MEMBERS + 1),
            org_id: Some(ORG.into()),
        };
        assert!(store.members(&outsider, ORG).await.unwrap().is_empty());
    });
    let mut g = c.benchmark_group("rls_read_postgres");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    // A context as the store signs it (a fresh one per iteration would cost the same HMAC).
    let (_, ctx) = store.signed_context_until(&scope, i64::MAX / 2).unwrap();
    let owner = |one: Option<String>, ctx: Option<String>| {
        let pool = pool.clone();
        let rt = &rt;
        move |b: &mut criterion::Bencher<'_>| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        owner_read(&pool, one.as_deref(), ctx.as_deref()).await;
                    }
                    start.elapsed()
                })
            })
        }
    };
    g.bench_function("owner_member_list", owner(None, None));
    g.bench_function("owner_member_list_same_tx", owner(None, Some(ctx.clone())));
    g.bench_function("scoped_member_list", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(store.members(&scope, ORG).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    let target = user(7);
    g.bench_function("owner_one_member", owner(Some(target.clone()), None));
    g.bench_function(
        "owner_one_member_same_tx",
        owner(Some(target.clone()), Some(ctx.clone())),
    );
    g.bench_function("scoped_one_member", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(store.membership(&scope, ORG, &target).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    // The figure the target is judged on: owner and scoped reads interleaved in short
    // batches, so the drift of a shared two-core VM hits both alike; median of the rounds.
    rt.block_on(async {
        for (name, one) in [("member list", None), ("one member", Some(target.as_str()))] {
            let (mut plain, mut same_tx) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let t = Instant::now();
                for _ in 0..BATCH {
                    owner_read(&pool, one, None).await;
                }
                let owner_plain = t.elapsed();
                let t = Instant::now();
                for _ in 0..BATCH {
                    owner_read(&pool, one, Some(&ctx)).await;
                }
                let owner_same = t.elapsed();
                let t = Instant::now();
                for _ in 0..BATCH {
                    match one {
                        Some(u) => {
                            std::hint::black_box(store.membership(&scope, ORG, u).await.unwrap());
                        }
                        None => {
                            std::hint::black_box(store.members(&scope, ORG).await.unwrap());
                        }
                    }
                }
                let scoped = t.elapsed().as_secs_f64();
                plain.push(owner_plain.as_secs_f64() / scoped);
                same_tx.push(owner_same.as_secs_f64() / scoped);
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2] * 100.0
            };
            println!(
                "rls_read_postgres/{name}: scoped rate = {:.1}% of the owner's plain transaction, {:.1}% of the owner's same-shape transaction (median of {ROUNDS} interleaved rounds of {BATCH})",
                median(&mut plain),
                median(&mut same_tx)
            );
        }
    });
    rt.block_on(async {
        pool.close().await;
        drop(db);
    });
}

criterion_group!(benches, postgres);
criterion_main!(benches);
