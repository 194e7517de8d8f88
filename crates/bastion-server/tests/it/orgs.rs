//! Organizations over HTTP (SPEC R1–R6): the cross-tenant attack suite at every level and
//! with every kind of credential, the level rules, API keys, invitations and private data.
//! Each scenario runs on SQLite and, when configured, on PostgreSQL.

use bastion_testkit::app::{Spawn, TestApp, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::signup_and_login;
use crate::{assert_problem, client};

/// The same server on SQLite and (when configured) PostgreSQL. These tests send hundreds of
/// requests from one address: the per-IP limit is off so only what is tested can refuse.
pub(crate) async fn backends(tweak: fn(&mut bastion_server::Config)) -> Vec<TestApp> {
    let tweak = move |c: &mut bastion_server::Config| {
        c.rate_limit.per_ip_per_second = 0;
        tweak(c);
    };
    let mut apps = vec![spawn_app(Spawn::default(), tweak).await.unwrap()];
    if let Some(pg) = spawn_app(
        Spawn {
            postgres: true,
            ..Spawn::default()
        },
        tweak,
    )
    .await
    {
        apps.push(pg);
    }
    apps
}

/// One request with `auth` as the Authorization header (and an Origin header if asked).
pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = client()
        .request(method, app.url(path))
        .header("authorization", auth);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

pub(crate) async fn ok_json(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

pub(crate) fn bearer(tokens: &Value) -> String {
    format!("Bearer {}", tokens["access_token"].as_str().unwrap())
}

pub(crate) async fn user_id(app: &TestApp, auth: &str) -> String {
    let me = ok_json(call(app, Method::GET, "/v1/me", auth, None).await, 200).await;
    me["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn create_org(app: &TestApp, auth: &str, name: &str) -> String {
    let org = ok_json(
        call(
            app,
            Method::POST,
            "/v1/orgs",
            auth,
            Some(json!({ "name": name })),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(org["level"], "super_admin");
    org["id"].as_str().unwrap().to_owned()
}

/// Signs `email` up, invites it into `org` at `level` and accepts: (auth header, user id).
pub(crate) async fn member(
    app: &TestApp,
    org: &str,
    inviter: &str,
    email: &str,
    level: &str,
) -> (String, String) {
    let auth = bearer(&signup_and_login(app, email).await);
    ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/invitations"),
            inviter,
            Some(json!({ "email": email, "level": level })),
        )
        .await,
        201,
    )
    .await;
    let token = app.link_token(email, 2).await;
    let m = ok_json(
        call(
            app,
            Method::POST,
            "/v1/invitations/accept",
            &auth,
            Some(json!({ "token": token })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(m["level"], level);
    assert_eq!(m["org_id"], org);
    let id = user_id(app, &auth).await;
    (auth, id)
}

pub(crate) async fn api_key(app: &TestApp, org: &str, auth: &str, kind: &str) -> (String, String) {
    let k = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{org}/api-keys"),
            auth,
            Some(json!({ "name": format!("{kind} key"), "kind": kind })),
        )
        .await,
        201,
    )
    .await;
    (
        format!("Bearer {}", k["secret"].as_str().unwrap()),
        k["id"].as_str().unwrap().to_owned(),
    )
}

/// Org A with a member at every level and both kinds of key; org B with its own members,
/// a pending invitation, a key, audit events, a session and private data.
struct World {
    a: String,
    /// (what, Authorization header) for every credential of org A.
    attackers: Vec<(String, String)>,
    alice: String,
    b: String,
    b_name: String,
    bob: String,
    bob_id: String,
    carol_id: String,
    b_invitation: String,
    b_key: String,
    bob_session: String,
    b_project: String,
}

async fn world(app: &TestApp) -> World {
    let alice = bearer(&signup_and_login(app, "alice@a.example").await);
    let a = create_org(app, &alice, "Org A").await;
    let mut attackers = vec![("super_admin".to_owned(), alice.clone())];
    for level in ["admin", "manager", "user", "learner", "viewer"] {
        let (auth, _) = member(app, &a, &alice, &format!("{level}@a.example"), level).await;
        attackers.push((level.to_owned(), auth));
    }
    let (service, _) = api_key(app, &a, &alice, "service").await;
    let (publishable, _) = api_key(app, &a, &alice, "publishable").await;
    attackers.push(("service key".into(), service));
    attackers.push(("publishable key".into(), publishable));

    let bob_tokens = signup_and_login(app, "bob@b.example").await;
    let bob = bearer(&bob_tokens);
    let bob_id = user_id(app, &bob).await;
    let b_name = "Org B".to_owned();
    let b = create_org(app, &bob, &b_name).await;
    let (_, carol_id) = member(app, &b, &bob, "carol@b.example", "user").await;
    let inv = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{b}/invitations"),
            &bob,
            Some(json!({ "email": "dave@b.example", "level": "viewer" })),
        )
        .await,
        201,
    )
    .await;
    let (_, b_key) = api_key(app, &b, &bob, "service").await;
    let b_project = ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{b}/projects"),
            &bob,
            Some(json!({ "name": "b-prod" })),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok_json(
        call(
            app,
            Method::POST,
            &format!("/v1/orgs/{b}/projects/{b_project}/secrets"),
            &bob,
            Some(json!({ "name": "B_TOKEN", "value": "b-secret-value" })),
        )
        .await,
        201,
    )
    .await;
    ok_json(
        call(
            app,
            Method::POST,
            "/v1/me/activity",
            &bob,
            Some(json!({ "kind": "app.focus", "data": { "app": "secret-project" }, "org_id": b })),
        )
        .await,
        201,
    )
    .await;
    World {
        a,
        attackers,
        alice,
        b,
        b_name,
        bob,
        bob_id,
        carol_id,
        b_invitation: inv["id"].as_str().unwrap().to_owned(),
        b_key,
        bob_session: bob_tokens["session_id"].as_str().unwrap().to_owned(),
        b_project,
    }
}

/// What org B looks like to its Super Admin: unchanged by any attack.
async fn b_snapshot(app: &TestApp, w: &World) -> Value {
    let b = &w.b;
    let mut out = json!({});
    for (name, path) in [
        ("org", format!("/v1/orgs/{b}")),
        ("members", format!("/v1/orgs/{b}/members")),
        ("invitations", format!("/v1/orgs/{b}/invitations")),
        ("keys", format!("/v1/orgs/{b}/api-keys")),
        ("projects", format!("/v1/orgs/{b}/projects")),
        (
            "secrets",
            format!("/v1/orgs/{b}/projects/{}/secrets", w.b_project),
        ),
    ] {
        let mut v = ok_json(call(app, Method::GET, &path, &w.bob, None).await, 200).await;
        // Last-used times move with legitimate use; everything else must not.
        if let Some(keys) = v["api_keys"].as_array_mut() {
            for k in keys {
                k["last_used_ms"] = Value::Null;
            }
        }
        out[name] = v;
    }
    let sessions = ok_json(
        call(app, Method::GET, "/v1/sessions", &w.bob, None).await,
        200,
    )
    .await;
    out["sessions"] = json!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].clone(), s["revoked"].clone()))
            .collect::<Vec<_>>()
    );
    let reveal = call(
        app,
        Method::POST,
        &format!(
            "/v1/orgs/{b}/projects/{}/secrets/B_TOKEN/reveal",
            w.b_project
        ),
        &w.bob,
        Some(json!({ "reason": "snapshot for the attack suite" })),
    )
    .await;
    out["secret_value"] = ok_json(reveal, 200).await["value"].clone();
    out["activity"] = ok_json(
        call(app, Method::GET, "/v1/me/activity", &w.bob, None).await,
        200,
    )
    .await;
    out
}

async fn r4_attack_suite(app: &TestApp) {
    let w = world(app).await;
    let before = b_snapshot(app, &w).await;
    assert_eq!(before["members"]["members"].as_array().unwrap().len(), 2);
    assert_eq!(before["activity"]["activity"].as_array().unwrap().len(), 1);
    let (a, b) = (&w.a, &w.b);
    let (bob_id, carol_id, inv, key) = (&w.bob_id, &w.carol_id, &w.b_invitation, &w.b_key);
    let prj = &w.b_project;
    let get = Method::GET;
    let post = Method::POST;
    let patch = Method::PATCH;
    let del = Method::DELETE;
    // Every org-B resource through every verb, and B's rows reached through org A's paths.
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (get.clone(), format!("/v1/orgs/{b}"), None),
        (
            patch.clone(),
            format!("/v1/orgs/{b}"),
            Some(json!({ "name": "pwned" })),
        ),
        (
            del.clone(),
            format!("/v1/orgs/{b}?confirm={}", w.b_name.replace(' ', "%20")),
            None,
        ),
        (get.clone(), format!("/v1/orgs/{b}/me/permissions"), None),
        (get.clone(), format!("/v1/orgs/{b}/members"), None),
        (
            patch.clone(),
            format!("/v1/orgs/{b}/members/{carol_id}"),
            Some(json!({ "level": "admin" })),
        ),
        (
            patch.clone(),
            format!("/v1/orgs/{b}/members/{bob_id}"),
            Some(json!({ "level": "viewer" })),
        ),
        (
            del.clone(),
            format!("/v1/orgs/{b}/members/{carol_id}"),
            None,
        ),
        (del.clone(), format!("/v1/orgs/{b}/members/{bob_id}"), None),
        (get.clone(), format!("/v1/orgs/{b}/invitations"), None),
        (
            post.clone(),
            format!("/v1/orgs/{b}/invitations"),
            Some(json!({ "email": "mallory@evil.example", "level": "viewer" })),
        ),
        (del.clone(), format!("/v1/orgs/{b}/invitations/{inv}"), None),
        (get.clone(), format!("/v1/orgs/{b}/api-keys"), None),
        (
            post.clone(),
            format!("/v1/orgs/{b}/api-keys"),
            Some(json!({ "name": "mine now", "kind": "service" })),
        ),
        (del.clone(), format!("/v1/orgs/{b}/api-keys/{key}"), None),
        (get.clone(), format!("/v1/orgs/{b}/audit"), None),
        (get.clone(), format!("/v1/orgs/{b}/projects"), None),
        (
            post.clone(),
            format!("/v1/orgs/{b}/projects"),
            Some(json!({ "name": "planted" })),
        ),
        (del.clone(), format!("/v1/orgs/{b}/projects/{prj}"), None),
        (
            get.clone(),
            format!("/v1/orgs/{b}/projects/{prj}/secrets"),
            None,
        ),
        (
            post.clone(),
            format!("/v1/orgs/{b}/projects/{prj}/secrets"),
            Some(json!({ "name": "PLANTED", "value": "x" })),
        ),
        (
            Method::PUT,
            format!("/v1/orgs/{b}/projects/{prj}/secrets/B_TOKEN"),
            Some(json!({ "value": "overwritten" })),
        ),
        (
            del.clone(),
            format!("/v1/orgs/{b}/projects/{prj}/secrets/B_TOKEN"),
            None,
        ),
        (
            post.clone(),
            format!("/v1/orgs/{b}/projects/{prj}/secrets/B_TOKEN/reveal"),
            Some(json!({ "reason": "just looking around" })),
        ),
    ];
    // B's rows addressed through org A, where the attacker is a member: the answer must be
    // exactly the one for an id that exists nowhere (404, or 403 for lacking the permission
    // in A, decided before any look-up), so it says nothing about B.
    let nowhere = |prefix: &str| format!("{prefix}_{}", "0".repeat(32));
    let via_a: Vec<(Method, String, String, Option<Value>)> = vec![
        (
            patch.clone(),
            format!("/v1/orgs/{a}/members/{carol_id}"),
            format!("/v1/orgs/{a}/members/{}", nowhere("usr")),
            Some(json!({ "level": "viewer" })),
        ),
        (
            del.clone(),
            format!("/v1/orgs/{a}/members/{bob_id}"),
            format!("/v1/orgs/{a}/members/{}", nowhere("usr")),
            None,
        ),
        (
            del.clone(),
            format!("/v1/orgs/{a}/invitations/{inv}"),
            format!("/v1/orgs/{a}/invitations/{}", nowhere("inv")),
            None,
        ),
        (
            del.clone(),
            format!("/v1/orgs/{a}/api-keys/{key}"),
            format!("/v1/orgs/{a}/api-keys/{}", nowhere("key")),
            None,
        ),
        (
            get.clone(),
            format!("/v1/orgs/{a}/projects/{prj}/secrets"),
            format!("/v1/orgs/{a}/projects/{}/secrets", nowhere("prj")),
            None,
        ),
        (
            post.clone(),
            format!("/v1/orgs/{a}/projects/{prj}/secrets/B_TOKEN/reveal"),
            format!(
                "/v1/orgs/{a}/projects/{}/secrets/B_TOKEN/reveal",
                nowhere("prj")
            ),
            Some(json!({ "reason": "just looking around" })),
        ),
        (
            Method::PUT,
            format!("/v1/orgs/{a}/projects/{prj}/secrets/B_TOKEN"),
            format!("/v1/orgs/{a}/projects/{}/secrets/B_TOKEN", nowhere("prj")),
            Some(json!({ "value": "overwritten" })),
        ),
        (
            del.clone(),
            format!("/v1/orgs/{a}/projects/{prj}"),
            format!("/v1/orgs/{a}/projects/{}", nowhere("prj")),
            None,
        ),
    ];
    for (who, auth) in &w.attackers {
        for (method, path, body) in &attempts {
            let res = call(app, method.clone(), path, auth, body.clone()).await;
            assert_eq!(
                res.status().as_u16(),
                404,
                "{who}: {method} {path} must be 404 (never 403, which would confirm B exists)"
            );
        }
        for (method, path, control, body) in &via_a {
            let got = call(app, method.clone(), path, auth, body.clone()).await;
            let want = call(app, method.clone(), control, auth, body.clone()).await;
            let (got, want) = (got.status().as_u16(), want.status().as_u16());
            assert_eq!(
                got, want,
                "{who}: {method} {path} answers unlike a made-up id"
            );
            assert!(got == 404 || got == 403, "{who}: {method} {path} -> {got}");
        }
        // B never shows up in a list, and B's private data never reaches anyone else.
        let mine = ok_json(call(app, Method::GET, "/v1/orgs", auth, None).await, 200).await;
        assert!(
            !mine.to_string().contains(b.as_str()),
            "{who} lists org B: {mine}"
        );
        let is_key = who.ends_with("key");
        let activity = call(app, Method::GET, "/v1/me/activity", auth, None).await;
        if is_key {
            assert_eq!(activity.status(), 401, "{who}: keys have no private data");
        } else {
            let body = ok_json(activity, 200).await;
            assert!(
                !body.to_string().contains("secret-project"),
                "{who}: {body}"
            );
        }
        // Bob's session: revoking it by id reveals nothing and ends nothing.
        let res = call(
            app,
            Method::DELETE,
            &format!("/v1/sessions/{}", w.bob_session),
            auth,
            None,
        )
        .await;
        assert_eq!(res.status(), if is_key { 401 } else { 404 }, "{who}");
    }
    assert_eq!(
        b_snapshot(app, &w).await,
        before,
        "org B changed under attack"
    );
    // Control: the same requests from B's own Super Admin do work (so 404 above meant refused).
    let res = call(
        app,
        Method::GET,
        &format!("/v1/orgs/{b}/audit"),
        &w.bob,
        None,
    )
    .await;
    let audit = ok_json(res, 200).await;
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "org.created")
    );
    let _ = &w.alice;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_a_member_of_org_a_at_every_level_and_with_every_credential_reaches_nothing_of_org_b() {
    for app in backends(|_| {}).await {
        r4_attack_suite(&app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_escalation_is_refused_and_the_last_super_admin_stays() {
    for app in backends(|_| {}).await {
        let alice = bearer(&signup_and_login(&app, "alice@a.example").await);
        let org = create_org(&app, &alice, "Acme").await;
        let alice_id = user_id(&app, &alice).await;
        let (admin, admin_id) = member(&app, &org, &alice, "admin@a.example", "admin").await;
        let (manager, manager_id) =
            member(&app, &org, &admin, "manager@a.example", "manager").await;
        let (_, user_id_) = member(&app, &org, &manager, "user@a.example", "user").await;
        let members = format!("/v1/orgs/{org}/members");
        let invitations = format!("/v1/orgs/{org}/invitations");

        // A Manager (60) grants neither 80 nor 60, by invitation or by promotion.
        for level in ["admin", "manager", "super_admin"] {
            let res = call(
                &app,
                Method::POST,
                &invitations,
                &manager,
                Some(json!({ "email": "x@a.example", "level": level })),
            )
            .await;
            assert_problem(res, 403, "level_too_high").await;
        }
        // Nor does a Manager withdraw an invitation an Admin made at the Manager's own level.
        let pending = ok_json(
            call(
                &app,
                Method::POST,
                &invitations,
                &admin,
                Some(json!({ "email": "pending@a.example", "level": "manager" })),
            )
            .await,
            201,
        )
        .await;
        let res = call(
            &app,
            Method::DELETE,
            &format!("{invitations}/{}", pending["id"].as_str().unwrap()),
            &manager,
            None,
        )
        .await;
        assert_problem(res, 403, "level_too_high").await;
        let res = call(
            &app,
            Method::PATCH,
            &format!("{members}/{user_id_}"),
            &manager,
            Some(json!({ "level": "admin" })),
        )
        .await;
        // Managers lack members.update altogether in the default map.
        assert_problem(res, 403, "permission_denied").await;
        // An Admin promotes nobody to 80 or 100, not even themself, and cannot touch a peer
        // or a superior.
        for (target, level) in [
            (&user_id_, "admin"),
            (&user_id_, "super_admin"),
            (&admin_id, "super_admin"),
            (&admin_id, "manager"),
            (&alice_id, "user"),
        ] {
            let res = call(
                &app,
                Method::PATCH,
                &format!("{members}/{target}"),
                &admin,
                Some(json!({ "level": level })),
            )
            .await;
            assert_problem(res, 403, "level_too_high").await;
        }
        let res = call(
            &app,
            Method::DELETE,
            &format!("{members}/{alice_id}"),
            &admin,
            None,
        )
        .await;
        assert_problem(res, 403, "level_too_high").await;
        // Every refusal above left the org as it was: the same members at the same levels, and
        // nobody invited at a level the inviter lacked.
        let levels = |app: &TestApp, auth: String| {
            let url = members.clone();
            let app_url = app.url(&url);
            async move {
                let list = client()
                    .get(app_url)
                    .header("authorization", auth)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap();
                let mut out: Vec<(String, String)> = list["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        let email = m["email"].as_str().unwrap().to_owned();
                        (email, m["level"].as_str().unwrap().to_owned())
                    })
                    .collect();
                out.sort();
                out
            }
        };
        let expected: Vec<(String, String)> = [
            ("admin@a.example", "admin"),
            ("alice@a.example", "super_admin"),
            ("manager@a.example", "manager"),
            ("user@a.example", "user"),
        ]
        .iter()
        .map(|(e, l)| ((*e).to_owned(), (*l).to_owned()))
        .collect();
        assert_eq!(levels(&app, alice.clone()).await, expected);
        let pending_now = ok_json(
            call(&app, Method::GET, &invitations, &alice, None).await,
            200,
        )
        .await;
        let pending_emails: Vec<&str> = pending_now["invitations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["accepted"] == false)
            .filter_map(|i| i["email"].as_str())
            .collect();
        assert!(
            pending_emails.contains(&"pending@a.example"),
            "{pending_now}"
        );
        assert!(!pending_emails.contains(&"x@a.example"), "{pending_now}");
        // Allowed: an Admin moves a Manager below itself.
        let m = ok_json(
            call(
                &app,
                Method::PATCH,
                &format!("{members}/{manager_id}"),
                &admin,
                Some(json!({ "level": "user" })),
            )
            .await,
            200,
        )
        .await;
        assert_eq!(m["level"], "user");
        // The last Super Admin can neither demote themself nor leave.
        let res = call(
            &app,
            Method::PATCH,
            &format!("{members}/{alice_id}"),
            &alice,
            Some(json!({ "level": "admin" })),
        )
        .await;
        assert_problem(res, 409, "last_super_admin").await;
        let res = call(
            &app,
            Method::DELETE,
            &format!("{members}/{alice_id}"),
            &alice,
            None,
        )
        .await;
        assert_problem(res, 409, "last_super_admin").await;
        let after = levels(&app, alice.clone()).await;
        assert!(
            after.contains(&("alice@a.example".to_owned(), "super_admin".to_owned())),
            "the last Super Admin is still one, and still a member: {after:?}"
        );
        // With a second Super Admin, the first may step down.
        ok_json(
            call(
                &app,
                Method::PATCH,
                &format!("{members}/{admin_id}"),
                &alice,
                Some(json!({ "level": "super_admin" })),
            )
            .await,
            200,
        )
        .await;
        ok_json(
            call(
                &app,
                Method::PATCH,
                &format!("{members}/{alice_id}"),
                &alice,
                Some(json!({ "level": "admin" })),
            )
            .await,
            200,
        )
        .await;
        // Every change is in the org's audit trail, category admin.
        let audit = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/audit"),
                &admin,
                None,
            )
            .await,
            200,
        )
        .await;
        let actions: Vec<&str> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["category"], "admin");
                e["action"].as_str().unwrap()
            })
            .collect();
        for a in [
            "org.created",
            "member.invited",
            "member.joined",
            "member.level_changed",
        ] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
        // The refused attempts are there too, as denied.
        for a in [
            "member.invite_refused",
            "member.change_refused",
            "member.invitation_revoke_refused",
            "permission.denied",
        ] {
            let ev = audit["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["action"] == a)
                .unwrap_or_else(|| panic!("{a} missing from {actions:?}"));
            assert_eq!(ev["outcome"], "denied", "{ev}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_me_permissions_is_the_effective_set_and_each_action_needs_its_permission() {
    for app in backends(|_| {}).await {
        let alice = bearer(&signup_and_login(&app, "alice@a.example").await);
        let org = create_org(&app, &alice, "Acme").await;
        let (viewer, _) = member(&app, &org, &alice, "viewer@a.example", "viewer").await;
        let path = format!("/v1/orgs/{org}/me/permissions");
        let top = ok_json(call(&app, Method::GET, &path, &alice, None).await, 200).await;
        let low = ok_json(call(&app, Method::GET, &path, &viewer, None).await, 200).await;
        assert_eq!(top["level"], "super_admin");
        assert_eq!(low["level"], "viewer");
        let set = |v: &Value| {
            v["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert!(set(&low).is_subset(&set(&top)));
        assert!(set(&top).contains("org.delete") && !set(&low).contains("members.invite"));
        assert!(set(&low).contains("org.read") && set(&low).contains("members.read"));
        // A Viewer reads, and is refused (403: it is their own org) everything else.
        ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/members"),
                &viewer,
                None,
            )
            .await,
            200,
        )
        .await;
        for (m, p, body) in [
            (
                Method::PATCH,
                format!("/v1/orgs/{org}"),
                Some(json!({ "name": "x" })),
            ),
            (
                Method::POST,
                format!("/v1/orgs/{org}/invitations"),
                Some(json!({ "email": "x@a.example", "level": "viewer" })),
            ),
            (Method::GET, format!("/v1/orgs/{org}/api-keys"), None),
            (Method::GET, format!("/v1/orgs/{org}/audit"), None),
            (Method::DELETE, format!("/v1/orgs/{org}?confirm=Acme"), None),
        ] {
            assert_problem(
                call(&app, m, &p, &viewer, body).await,
                403,
                "permission_denied",
            )
            .await;
        }
        // Deleting needs the exact name, then the org is gone for everyone.
        let res = call(
            &app,
            Method::DELETE,
            &format!("/v1/orgs/{org}?confirm=acme"),
            &alice,
            None,
        )
        .await;
        assert_problem(res, 422, "confirmation_mismatch").await;
        let res = call(
            &app,
            Method::DELETE,
            &format!("/v1/orgs/{org}?confirm=Acme"),
            &alice,
            None,
        )
        .await;
        assert_eq!(res.status(), 204);
        for who in [&alice, &viewer] {
            let res = call(&app, Method::GET, &format!("/v1/orgs/{org}"), who, None).await;
            assert_problem(res, 404, "not_found").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_publishable_keys_only_read_and_service_keys_refuse_browsers() {
    for app in backends(|c| {
        c.rate_limit.per_api_key_per_second = 1;
        c.rate_limit.api_key_burst = 30;
    })
    .await
    {
        let alice = bearer(&signup_and_login(&app, "alice@a.example").await);
        let org = create_org(&app, &alice, "Acme").await;
        let (service, service_id) = api_key(&app, &org, &alice, "service").await;
        let (publishable, _) = api_key(&app, &org, &alice, "publishable").await;
        assert!(service.starts_with("Bearer bst_sk_") && publishable.starts_with("Bearer bst_pk_"));

        // Publishable: reads what the publishable set allows, nothing else, writes nothing.
        let o = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}"),
                &publishable,
                None,
            )
            .await,
            200,
        )
        .await;
        assert_eq!(o["name"], "Acme");
        for (m, p, body) in [
            (Method::GET, format!("/v1/orgs/{org}/members"), None),
            (Method::GET, format!("/v1/orgs/{org}/api-keys"), None),
            (
                Method::PATCH,
                format!("/v1/orgs/{org}"),
                Some(json!({ "name": "x" })),
            ),
            (
                Method::POST,
                format!("/v1/orgs/{org}/api-keys"),
                Some(json!({ "name": "x", "kind": "service" })),
            ),
            (
                Method::POST,
                format!("/v1/orgs/{org}/invitations"),
                Some(json!({ "email": "x@a.example", "level": "viewer" })),
            ),
        ] {
            assert_problem(
                call(&app, m, &p, &publishable, body).await,
                403,
                "permission_denied",
            )
            .await;
        }
        assert_problem(
            call(
                &app,
                Method::POST,
                "/v1/orgs",
                &publishable,
                Some(json!({ "name": "x" })),
            )
            .await,
            403,
            "user_required",
        )
        .await;
        // A publishable key may come from a browser.
        let res = client()
            .get(app.url(&format!("/v1/orgs/{org}")))
            .header("authorization", &publishable)
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);

        // Service: works from a server, refused from a browser context.
        let keys = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/api-keys"),
                &service,
                None,
            )
            .await,
            200,
        )
        .await;
        assert!(
            !keys
                .to_string()
                .contains(service.trim_start_matches("Bearer ")),
            "a key's secret is shown once"
        );
        assert!(
            keys["api_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["last_used_ms"].is_i64())
        );
        // Any header only a browser sends gives the key away: refused before any look-up.
        for (name, value) in [
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
        ] {
            let res = client()
                .get(app.url(&format!("/v1/orgs/{org}/api-keys")))
                .header("authorization", &service)
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_problem(res, 403, "service_key_in_browser").await;
        }
        // Service keys act as an Admin: no org deletion.
        assert_problem(
            call(
                &app,
                Method::DELETE,
                &format!("/v1/orgs/{org}?confirm=Acme"),
                &service,
                None,
            )
            .await,
            403,
            "permission_denied",
        )
        .await;

        // A made-up key, a key of the wrong shape, a revoked key: 401.
        let fake = format!("Bearer bst_sk_{}", "A".repeat(43));
        for bad in [fake.as_str(), "Bearer bst_pk_short"] {
            assert_problem(
                call(&app, Method::GET, &format!("/v1/orgs/{org}"), bad, None).await,
                401,
                "invalid_api_key",
            )
            .await;
        }
        let res = call(
            &app,
            Method::DELETE,
            &format!("/v1/orgs/{org}/api-keys/{service_id}"),
            &alice,
            None,
        )
        .await;
        assert_eq!(res.status(), 204);
        assert_problem(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}"),
                &service,
                None,
            )
            .await,
            401,
            "invalid_api_key",
        )
        .await;

        // Each key has its own rate limit (burst 30, then 1/s): the publishable key runs out,
        // while the user's token is unaffected.
        let mut limited = false;
        for _ in 0..40 {
            let res = call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}"),
                &publishable,
                None,
            )
            .await;
            if res.status() == 429 {
                assert!(res.headers().contains_key("retry-after"));
                limited = true;
                break;
            }
        }
        assert!(limited, "a key's own limit applies");
        ok_json(
            call(&app, Method::GET, &format!("/v1/orgs/{org}"), &alice, None).await,
            200,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_invitations_work_once_for_the_invited_address_and_r5_activity_stays_private() {
    for app in backends(|_| {}).await {
        let alice = bearer(&signup_and_login(&app, "alice@a.example").await);
        let org = create_org(&app, &alice, "Acme").await;
        let eve = bearer(&signup_and_login(&app, "eve@a.example").await);
        let carol = bearer(&signup_and_login(&app, "carol@a.example").await);
        ok_json(
            call(
                &app,
                Method::POST,
                &format!("/v1/orgs/{org}/invitations"),
                &alice,
                Some(json!({ "email": "Carol@A.example", "level": "user" })),
            )
            .await,
            201,
        )
        .await;
        let mails = app.wait_for_mail("carol@a.example", 2).await;
        // The org's name is in the body, quoted as data; never in the subject.
        let invite = mails.last().unwrap();
        assert!(!invite.subject().contains("Acme"), "{}", invite.subject());
        assert!(invite.decoded.contains("\"Acme"), "{}", invite.decoded);
        let token = app.link_token("carol@a.example", 2).await;
        // Someone else holding the link gets nothing (and uses it up).
        let res = call(
            &app,
            Method::POST,
            "/v1/invitations/accept",
            &eve,
            Some(json!({ "token": token })),
        )
        .await;
        assert_problem(res, 403, "wrong_invitee").await;
        let res = call(
            &app,
            Method::POST,
            "/v1/invitations/accept",
            &carol,
            Some(json!({ "token": token })),
        )
        .await;
        assert_problem(res, 400, "invalid_link").await;
        // A fresh invitation replaces the old one and works once.
        ok_json(
            call(
                &app,
                Method::POST,
                &format!("/v1/orgs/{org}/invitations"),
                &alice,
                Some(json!({ "email": "carol@a.example", "level": "user" })),
            )
            .await,
            201,
        )
        .await;
        let token = app.link_token("carol@a.example", 3).await;
        ok_json(
            call(
                &app,
                Method::POST,
                "/v1/invitations/accept",
                &carol,
                Some(json!({ "token": token })),
            )
            .await,
            200,
        )
        .await;
        let res = call(
            &app,
            Method::POST,
            "/v1/invitations/accept",
            &carol,
            Some(json!({ "token": token })),
        )
        .await;
        assert_problem(res, 400, "invalid_link").await;
        let list = ok_json(
            call(
                &app,
                Method::GET,
                &format!("/v1/orgs/{org}/invitations"),
                &alice,
                None,
            )
            .await,
            200,
        )
        .await;
        assert!(
            list["invitations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["accepted"] == true)
        );

        // Invitations share the per-address mail budget (5 an hour): no inbox flooding.
        for _ in 0..5 {
            ok_json(
                call(
                    &app,
                    Method::POST,
                    &format!("/v1/orgs/{org}/invitations"),
                    &alice,
                    Some(json!({ "email": "flood@a.example", "level": "viewer" })),
                )
                .await,
                201,
            )
            .await;
        }
        let res = call(
            &app,
            Method::POST,
            &format!("/v1/orgs/{org}/invitations"),
            &alice,
            Some(json!({ "email": "flood@a.example", "level": "viewer" })),
        )
        .await;
        assert!(res.headers().contains_key("retry-after"));
        assert_problem(res, 429, "rate_limited").await;

        // R5: Carol's activity is hers alone; her Super Admin sees none of it.
        ok_json(call(&app, Method::POST, "/v1/me/activity", &carol,
            Some(json!({ "kind": "window.focus", "data": { "title": "diary.txt" }, "org_id": org }))).await, 201).await;
        let hers = ok_json(
            call(&app, Method::GET, "/v1/me/activity", &carol, None).await,
            200,
        )
        .await;
        assert_eq!(hers["activity"][0]["data"]["title"], "diary.txt");
        let theirs = ok_json(
            call(&app, Method::GET, "/v1/me/activity", &alice, None).await,
            200,
        )
        .await;
        assert_eq!(theirs["activity"].as_array().unwrap().len(), 0);
        // Tagging a row with an org one is not in is refused like any other stranger's access.
        let res = call(
            &app,
            Method::POST,
            "/v1/me/activity",
            &eve,
            Some(json!({ "kind": "x", "data": {}, "org_id": org })),
        )
        .await;
        assert_problem(res, 404, "not_found").await;
    }
}
