//! Magic links in the account flows (SPEC A7) on SQLite and PostgreSQL, with a manual clock:
//! verification and reset links work once, not after expiry, not after a newer one.

use std::sync::{Arc, Mutex};

use bastion_core::accounts::{AccountDeps, AccountError, AccountPolicy, Accounts};
use bastion_core::audit::AuditLog;
use bastion_core::clock::ManualClock;
use bastion_core::keys::{KeyRing, SharedKeyRing};
use bastion_core::links::{LinkPurpose, MagicLinks};
use bastion_core::mail::{
    Branding, DispatchPolicy, MailTransport, Mailer, Message, TransportError,
};
use bastion_core::passwords::{PasswordHashing, PasswordRules};
use bastion_core::sessions::{Device, SessionPolicy, Sessions};
use bastion_core::vault::Vault;
use bastion_core::{Clock, SystemClock};
use bastion_crypto::master::MasterKey;
use bastion_crypto::password::PasswordPolicy;
use bastion_store::Store;
use secrecy::SecretString;

const PASSWORD: &str = "correct horse battery staple";
const LINK_TTL_MS: i64 = 30 * 60_000;

/// Records what it is asked to deliver, standing in for SMTP in these domain tests.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, String)>>);

#[async_trait::async_trait]
impl MailTransport for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    async fn send(&self, m: &Message) -> Result<(), TransportError> {
        self.0
            .lock()
            .unwrap()
            .push((m.to.clone(), m.subject.clone(), m.text.clone()));
        Ok(())
    }
}

struct Env {
    store: Arc<dyn Store>,
    accounts: Arc<Accounts>,
    sessions: Arc<Sessions>,
    mailer: Arc<Mailer>,
    sent: Arc<Recorder>,
    clock: Arc<ManualClock>,
    _db: bastion_testkit::stores::TestStore,
}

impl Env {
    /// Delivers what is queued and returns the link token of the newest mail to `to`.
    async fn token_for(&self, to: &str, count: usize) -> SecretString {
        for _ in 0..500 {
            self.mailer.dispatch_due(self.sent.as_ref()).await.unwrap();
            let mails: Vec<_> = self
                .sent
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _, _)| t == to)
                .cloned()
                .collect();
            if mails.len() >= count {
                let text = &mails[count - 1].2;
                let at = text.find("#token=").unwrap() + "#token=".len();
                let token: String = text[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                return SecretString::from(token);
            }
            // `request_link` works in a spawned task: let it run.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no mail {count} to {to}");
    }
}

async fn env(postgres: bool) -> Option<Env> {
    let fresh = bastion_testkit::stores::fresh_store(postgres).await?;
    let store = fresh.store.clone();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let keys = SharedKeyRing::new(
        KeyRing::open(
            store.as_ref(),
            &MasterKey::from_bytes([4; 32]),
            clock.as_ref(),
        )
        .await
        .unwrap(),
    );
    let audit = Arc::new(AuditLog::new(
        store.clone(),
        keys.clone(),
        dyn_clock.clone(),
        1000,
    ));
    let sessions = Arc::new(Sessions::new(
        store.clone(),
        keys.clone(),
        audit.clone(),
        dyn_clock.clone(),
        SessionPolicy::default(),
    ));
    let vault = Arc::new(Vault::new(keys, store.clone()));
    let mailer = Arc::new(Mailer::new(
        store.clone(),
        vault,
        dyn_clock.clone(),
        Branding {
            product: "Bastion".into(),
            link_ttl_minutes: 30,
        },
        DispatchPolicy::default(),
    ));
    let links = Arc::new(MagicLinks::new(
        store.clone(),
        mailer.clone(),
        dyn_clock.clone(),
        LINK_TTL_MS,
        "https://app.example.com/",
    ));
    let policy = PasswordPolicy {
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        ..PasswordPolicy::owasp()
    };
    let accounts = Arc::new(Accounts::new(
        AccountDeps {
            store: store.clone(),
            hashing: Arc::new(PasswordHashing::new(policy, 2).unwrap()),
            rules: PasswordRules::default(),
            sessions: sessions.clone(),
            audit,
            clock: dyn_clock,
            links,
            mailer: mailer.clone(),
        },
        AccountPolicy::default(),
    ));
    Some(Env {
        store,
        accounts,
        sessions,
        mailer,
        sent: Arc::new(Recorder::default()),
        clock,
        _db: fresh,
    })
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn device() -> Device {
    Device {
        name: "laptop".into(),
        platform: "linux".into(),
        ip: "203.0.113.9".into(),
        user_agent: "test".into(),
    }
}

async fn verification_link_works_once(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let a = &env.accounts;
    a.sign_up("ada@example.com", pw(PASSWORD), "192.0.2.1")
        .await
        .unwrap();
    assert!(matches!(
        a.sign_in("ada@example.com", pw(PASSWORD), &device()).await,
        Err(AccountError::EmailNotVerified)
    ));
    let id = env
        .store
        .user_by_email(&bastion_store::Scope::System("test"), "ada@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert!(!a.me(&id).await.unwrap().unwrap().email_verified);
    let token = env.token_for("ada@example.com", 1).await;
    assert!(
        env.sent.0.lock().unwrap()[0]
            .2
            .contains("https://app.example.com/verify-email#token=bml_"),
        "the token travels in the fragment"
    );
    a.verify_email(&token).await.unwrap();
    assert!(
        a.me(&id).await.unwrap().unwrap().email_verified,
        "this node's copy of the account was dropped on change"
    );
    assert!(matches!(
        a.verify_email(&token).await,
        Err(AccountError::InvalidLink)
    ));
    a.sign_in("ada@example.com", pw(PASSWORD), &device())
        .await
        .unwrap();
}

async fn reset_link_rules(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let a = &env.accounts;
    a.sign_up("bo@example.com", pw(PASSWORD), "192.0.2.1")
        .await
        .unwrap();
    a.verify_email(&env.token_for("bo@example.com", 1).await)
        .await
        .unwrap();
    let before = a
        .sign_in("bo@example.com", pw(PASSWORD), &device())
        .await
        .unwrap();

    // Not after a newer one for the same purpose.
    a.request_link(LinkPurpose::ResetPassword, "bo@example.com", "192.0.2.1")
        .unwrap();
    let first = env.token_for("bo@example.com", 2).await;
    env.clock.advance_ms(1_000);
    a.request_link(LinkPurpose::ResetPassword, "bo@example.com", "192.0.2.1")
        .unwrap();
    let second = env.token_for("bo@example.com", 3).await;
    assert!(matches!(
        a.reset_password(&first, pw("a brand new passphrase")).await,
        Err(AccountError::InvalidLink)
    ));
    // A verification token is not a reset token.
    a.request_link(LinkPurpose::VerifyEmail, "bo@example.com", "192.0.2.1")
        .unwrap();
    // Once…
    a.reset_password(&second, pw("a brand new passphrase"))
        .await
        .unwrap();
    // …not twice.
    assert!(matches!(
        a.reset_password(&second, pw("yet another passphrase"))
            .await,
        Err(AccountError::InvalidLink)
    ));
    assert!(matches!(
        a.sign_in("bo@example.com", pw(PASSWORD), &device()).await,
        Err(AccountError::InvalidCredentials)
    ));
    a.sign_in("bo@example.com", pw("a brand new passphrase"), &device())
        .await
        .unwrap();
    assert!(
        env.sessions
            .authenticate(secrecy::ExposeSecret::expose_secret(&before.access_token))
            .await
            .is_err(),
        "a reset ends the sessions opened before it"
    );

    // Not after expiry.
    a.request_link(LinkPurpose::ResetPassword, "bo@example.com", "192.0.2.1")
        .unwrap();
    let late = env.token_for("bo@example.com", 4).await;
    env.clock.advance_ms(LINK_TTL_MS);
    assert!(matches!(
        a.reset_password(&late, pw("too late passphrase")).await,
        Err(AccountError::InvalidLink)
    ));

    // Forged and malformed tokens are the same answer.
    for bad in [
        "",
        "bml_",
        "bml_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "bst_rt_x",
    ] {
        assert!(matches!(
            a.reset_password(&pw(bad), pw("whatever passphrase")).await,
            Err(AccountError::InvalidLink)
        ));
    }
}

async fn concurrent_resets_have_one_winner(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let a = &env.accounts;
    a.sign_up("cy@example.com", pw(PASSWORD), "192.0.2.1")
        .await
        .unwrap();
    env.token_for("cy@example.com", 1).await;
    a.request_link(LinkPurpose::ResetPassword, "cy@example.com", "192.0.2.1")
        .unwrap();
    let token = env.token_for("cy@example.com", 2).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let a = a.clone();
            let t = SecretString::from(secrecy::ExposeSecret::expose_secret(&token).to_owned());
            tokio::spawn(async move {
                a.reset_password(&t, pw(&format!("racing passphrase {i}")))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn a7_verification_link_works_once_sqlite() {
    verification_link_works_once(false).await;
}

#[tokio::test]
async fn a7_verification_link_works_once_postgres() {
    verification_link_works_once(true).await;
}

#[tokio::test]
async fn a7_reset_link_works_once_not_after_expiry_not_after_a_newer_one_sqlite() {
    reset_link_rules(false).await;
}

#[tokio::test]
async fn a7_reset_link_works_once_not_after_expiry_not_after_a_newer_one_postgres() {
    reset_link_rules(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_concurrent_resets_with_one_link_have_one_winner_sqlite() {
    concurrent_resets_have_one_winner(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_concurrent_resets_with_one_link_have_one_winner_postgres() {
    concurrent_resets_have_one_winner(true).await;
}

/// An account row as an older email rule (trim and lower-case only) left it.
fn old_row(id: &str, email: &str) -> bastion_store::UserRow {
    bastion_store::UserRow {
        id: id.into(),
        email: email.into(),
        email_verified_ms: Some(1),
        password_hash: None,
        super_admin: false,
        created_ms: 1,
        updated_ms: 1,
    }
}

async fn renormalization_at_start_up(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let sys = bastion_store::Scope::System("test");
    // A real account whose row an older rule had stored in another form.
    let a = &env.accounts;
    a.sign_up("ada@xn--bcher-kva.example", pw(PASSWORD), "192.0.2.1")
        .await
        .unwrap();
    let token = env.token_for("ada@xn--bcher-kva.example", 1).await;
    a.verify_email(&token).await.unwrap();
    let ada = env
        .store
        .user_by_email(&sys, "ada@xn--bcher-kva.example")
        .await
        .unwrap()
        .unwrap();
    assert!(
        env.store
            .set_email(&sys, &ada.id, &ada.email, "ada@bücher.example", 2)
            .await
            .unwrap()
    );
    for (id, email) in [
        // Normal already; the next one would move onto it.
        ("usr_2", "bob@xn--bcher-kva.example"),
        ("usr_3", "bob@bücher.example"),
        // Two old forms of one address that nobody holds yet.
        ("usr_4", "ｃａｒｌ@example.com"),
        ("usr_5", "car\u{200B}l@example.com"),
        // Refused by the current rule.
        ("usr_6", "eve@bad_host.example"),
        ("usr_7", "dan@example.com"),
    ] {
        env.store
            .create_user(&sys, &old_row(id, email))
            .await
            .unwrap();
    }

    let out = a.renormalize_emails().await.unwrap();
    assert_eq!(out.rewritten, std::slice::from_ref(&ada.id));
    assert_eq!(
        out.collisions,
        [vec!["usr_2", "usr_3"], vec!["usr_4", "usr_5"]]
    );
    assert_eq!(out.refused, ["usr_6"]);
    for (id, kept) in [
        ("usr_2", "bob@xn--bcher-kva.example"),
        ("usr_3", "bob@bücher.example"),
        ("usr_4", "ｃａｒｌ@example.com"),
        ("usr_5", "car\u{200B}l@example.com"),
        ("usr_6", "eve@bad_host.example"),
        ("usr_7", "dan@example.com"),
    ] {
        let now = env.store.user_by_id(&sys, id).await.unwrap().unwrap();
        assert_eq!(now.email, kept, "{id} is left as it was, never merged");
    }
    // The rewritten account is reached by every form of its address.
    for form in [
        "ada@bücher.example",
        "ＡＤＡ@XN--BCHER-KVA.example",
        "a\u{200B}da@BÜCHER.example",
    ] {
        a.sign_in(form, pw(PASSWORD), &device()).await.unwrap();
    }

    // Each finding is in the audit trail, with account ids only.
    let events = env.store.events_after(&sys, 0, 1000).await.unwrap();
    let with = |action: &str| {
        events
            .iter()
            .filter(|r| r.event.action == action)
            .map(|r| (r.event.actor.clone(), r.event.details.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        with("account.email_normalized"),
        [(Some(ada.id.clone()), "null".to_owned())]
    );
    assert_eq!(
        with("account.email_collision"),
        [
            (None, r#"{"users":["usr_2","usr_3"]}"#.to_owned()),
            (None, r#"{"users":["usr_4","usr_5"]}"#.to_owned())
        ]
    );
    assert_eq!(
        with("account.email_refused"),
        [(Some("usr_6".to_owned()), "null".to_owned())]
    );
    assert!(
        !events.iter().any(|r| r.event.details.contains('@')),
        "no address in the audit trail"
    );

    // A second start rewrites nothing more and reports what is still unresolved.
    let again = a.renormalize_emails().await.unwrap();
    assert!(again.rewritten.is_empty());
    assert_eq!(again.collisions, out.collisions);
    assert_eq!(again.refused, out.refused);
}

#[tokio::test]
async fn a1_start_up_renormalization_rewrites_old_forms_and_reports_collisions_sqlite() {
    renormalization_at_start_up(false).await;
}

#[tokio::test]
async fn a1_start_up_renormalization_rewrites_old_forms_and_reports_collisions_postgres() {
    renormalization_at_start_up(true).await;
}
