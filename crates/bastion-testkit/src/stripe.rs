//! A fake Stripe: a real HTTP server on `127.0.0.1:0` speaking the subset of Stripe's API that
//! Bastion uses (Checkout Sessions created and retrieved, refunds, charges retrieved), with
//! Stripe's authentication, error shapes and idempotency; and webhook events in Stripe's format,
//! signed as Stripe signs them.
//!
//! Unlike Stripe, every POST must carry an `Idempotency-Key` (Bastion always sends one).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The form-encoded body's pairs, in order (empty for other bodies).
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A Checkout Session the fake created, with the parameters it was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSession {
    /// `cs_test_<n>`.
    pub id: String,
    pub url: String,
    /// `pi_test_<n>`: the PaymentIntent a payment of the session makes.
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub product_name: String,
    pub success_url: String,
    pub cancel_url: String,
    pub customer_email: Option<String>,
    pub client_reference_id: Option<String>,
    /// `metadata[k]`.
    pub metadata: BTreeMap<String, String>,
    /// `payment_intent_data[metadata][k]`: what the charge (and so its refund events) carries.
    pub payment_intent_metadata: BTreeMap<String, String>,
    /// Paid by the customer ([`FakeStripe::completed_event`] pays it).
    pub paid: bool,
}

/// A refund the fake made (through the API or [`FakeStripe::refunded_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRefund {
    /// `re_test_<n>`.
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
}

/// A response kept for an idempotency key: what it was for, and what was answered.
struct Kept {
    path: String,
    params: Vec<(String, String)>,
    status: StatusCode,
    body: Value,
}

#[derive(Default)]
struct Inner {
    requests: Vec<RecordedRequest>,
    delay: Duration,
    fail_next: Option<u16>,
    sessions: Vec<FakeSession>,
    refunds: Vec<FakeRefund>,
    idempotency: HashMap<String, Kept>,
    next_session: u64,
    next_refund: u64,
    next_event: u64,
}

#[derive(Clone)]
struct Shared {
    secret_key: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake Stripe; the server stops when this is dropped.
pub struct FakeStripe {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for FakeStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStripe")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A Stripe-shaped error response.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> (StatusCode, Value) {
    let mut body = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    (status, json!({ "error": body }))
}

fn missing(param: &str) -> (StatusCode, Value) {
    let mut e = error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        &format!("Missing required param: {param}."),
    );
    e.1["error"]["param"] = json!(param);
    e
}

fn invalid(param: &str, message: &str) -> (StatusCode, Value) {
    let mut e = error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_invalid"),
        message,
    );
    e.1["error"]["param"] = json!(param);
    e
}

/// `prefix[k]` pairs of the form, as a map of `k`.
fn bracketed(form: &[(String, String)], prefix: &str) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix(prefix)?
                .strip_prefix('[')?
                .strip_suffix(']')?;
            Some((key.to_owned(), v.clone()))
        })
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn session_json(s: &FakeSession, created: i64) -> Value {
    json!({
        "id": s.id,
        "object": "checkout.session",
        "url": s.url,
        "mode": "payment",
        "status": if s.paid { "complete" } else { "open" },
        "payment_status": if s.paid { "paid" } else { "unpaid" },
        "amount_subtotal": s.amount,
        "amount_total": s.amount,
        "currency": s.currency,
        "customer_email": s.customer_email,
        "client_reference_id": s.client_reference_id,
        "metadata": s.metadata,
        "success_url": s.success_url,
        "cancel_url": s.cancel_url,
        // Set once the customer pays, as on Stripe.
        "payment_intent": if s.paid { json!(s.payment_intent) } else { Value::Null },
        "created": created,
        "livemode": false,
    })
}

fn create_session(inner: &mut Inner, form: &[(String, String)]) -> (StatusCode, Value) {
    match field(form, "mode") {
        None => return missing("mode"),
        Some("payment") => {}
        Some(_) => return invalid("mode", "Only mode=payment is supported by this fake."),
    }
    let Some(currency) = field(form, "line_items[0][price_data][currency]") else {
        return missing("line_items[0][price_data][currency]");
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return invalid("line_items[0][price_data][currency]", "Invalid currency.");
    }
    let Some(amount) = field(form, "line_items[0][price_data][unit_amount]") else {
        return missing("line_items[0][price_data][unit_amount]");
    };
    let Some(amount) = amount.parse::<i64>().ok().filter(|a| *a >= 0) else {
        return invalid(
            "line_items[0][price_data][unit_amount]",
            "Invalid non-negative integer.",
        );
    };
    let Some(name) = field(form, "line_items[0][price_data][product_data][name]") else {
        return missing("line_items[0][price_data][product_data][name]");
    };
    match field(form, "line_items[0][quantity]") {
        None => return missing("line_items[0][quantity]"),
        Some("1") => {}
        Some(_) => return invalid("line_items[0][quantity]", "This fake sells one item."),
    }
    let Some(success_url) = field(form, "success_url") else {
        return missing("success_url");
    };
    inner.next_session += 1;
    let n = inner.next_session;
    let id = format!("cs_test_{n}");
    let session = FakeSession {
        url: format!("https://checkout.stripe.test/c/pay/{id}"),
        id,
        payment_intent: format!("pi_test_{n}"),
        amount,
        currency: currency.to_owned(),
        product_name: name.to_owned(),
        success_url: success_url.to_owned(),
        cancel_url: field(form, "cancel_url").unwrap_or_default().to_owned(),
        customer_email: field(form, "customer_email").map(str::to_owned),
        client_reference_id: field(form, "client_reference_id").map(str::to_owned),
        metadata: bracketed(form, "metadata"),
        payment_intent_metadata: bracketed(form, "payment_intent_data[metadata]"),
        paid: false,
    };
    let body = session_json(&session, now());
    inner.sessions.push(session);
    (StatusCode::OK, body)
}

fn refunded_so_far(inner: &Inner, payment_intent: &str) -> i64 {
    inner
        .refunds
        .iter()
        .filter(|r| r.payment_intent == payment_intent)
        .map(|r| r.amount)
        .sum()
}

/// Records a refund of `amount` (the rest when `None`) of the session's payment.
fn record_refund(
    inner: &mut Inner,
    payment_intent: &str,
    amount: Option<i64>,
) -> Result<(FakeRefund, FakeSession), (StatusCode, Value)> {
    let Some(session) = inner
        .sessions
        .iter()
        .find(|s| s.payment_intent == payment_intent)
        .cloned()
    else {
        let mut e = error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{payment_intent}'"),
        );
        e.1["error"]["param"] = json!("payment_intent");
        return Err(e);
    };
    let left = session.amount - refunded_so_far(inner, payment_intent);
    if left <= 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("charge_already_refunded"),
            "This charge has already been refunded.",
        ));
    }
    let amount = amount.unwrap_or(left);
    if amount <= 0 || amount > left {
        return Err(invalid(
            "amount",
            "Refund amount is greater than the unrefunded amount on the charge.",
        ));
    }
    inner.next_refund += 1;
    let refund = FakeRefund {
        id: format!("re_test_{}", inner.next_refund),
        payment_intent: payment_intent.to_owned(),
        amount,
    };
    inner.refunds.push(refund.clone());
    Ok((refund, session))
}

fn create_refund(inner: &mut Inner, form: &[(String, String)]) -> (StatusCode, Value) {
    let Some(payment_intent) = field(form, "payment_intent") else {
        return missing("payment_intent");
    };
    let amount = match field(form, "amount") {
        None => None,
        Some(a) => match a.parse::<i64>() {
            Ok(a) => Some(a),
            Err(_) => return invalid("amount", "Invalid integer."),
        },
    };
    match record_refund(inner, payment_intent, amount) {
        Ok((refund, session)) => (
            StatusCode::OK,
            json!({
                "id": refund.id,
                "object": "refund",
                "amount": refund.amount,
                "currency": session.currency,
                "payment_intent": refund.payment_intent,
                "charge": charge_id(&session),
                "status": "succeeded",
                "metadata": {},
                "created": now(),
            }),
        ),
        Err(e) => e,
    }
}

/// The charge of a session's payment: `ch_test_<n>` for `pi_test_<n>`.
fn charge_id(session: &FakeSession) -> String {
    session.payment_intent.replacen("pi_", "ch_", 1)
}

/// The charge of a paid session, with its refunds so far.
fn charge_json(inner: &Inner, session: &FakeSession) -> Value {
    let refunded = refunded_so_far(inner, &session.payment_intent);
    json!({
        "id": charge_id(session),
        "object": "charge",
        "amount": session.amount,
        "amount_captured": session.amount,
        "amount_refunded": refunded,
        "refunded": refunded >= session.amount,
        "captured": true,
        "paid": true,
        "status": "succeeded",
        "currency": session.currency,
        "payment_intent": session.payment_intent,
        "metadata": session.payment_intent_metadata,
    })
}

fn no_such(kind: &str, id: &str) -> (StatusCode, Value) {
    let mut e = error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {kind}: '{id}'"),
    );
    e.1["error"]["param"] = json!("id");
    e
}

/// `GET /v1/checkout/sessions/{id}` and `GET /v1/charges/{id}`.
fn retrieve(inner: &Inner, path: &str) -> (StatusCode, Value) {
    if let Some(id) = path.strip_prefix("/v1/checkout/sessions/") {
        return match inner.sessions.iter().find(|s| s.id == id) {
            Some(s) => (StatusCode::OK, session_json(s, now())),
            None => no_such("checkout.session", id),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/charges/") {
        return match inner.sessions.iter().find(|s| s.paid && charge_id(s) == id) {
            Some(s) => (StatusCode::OK, charge_json(inner, s)),
            None => no_such("charge", id),
        };
    }
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        &format!("Unrecognized request URL (GET: {path})."),
    )
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let path = uri.path().to_owned();
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let authorization = header("authorization");
    let idempotency_key = header("idempotency-key");
    let (status, body, delay) = {
        let mut inner = shared.lock();
        inner.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            form: form.clone(),
        });
        let delay = inner.delay;
        let (status, body) = answer(
            &shared.secret_key,
            &mut inner,
            &method,
            &path,
            authorization.as_deref(),
            idempotency_key.as_deref(),
            form,
        );
        (status, body, delay)
    };
    // The work is done (and kept) first: a client that gives up early finds it on retry.
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut res = (status, axum::Json(body)).into_response();
    if let Ok(v) = "req_test".parse() {
        res.headers_mut().insert("request-id", v);
    }
    res
}

fn answer(
    secret_key: &str,
    inner: &mut Inner,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    idempotency_key: Option<&str>,
    form: Vec<(String, String)>,
) -> (StatusCode, Value) {
    if let Some(code) = inner.fail_next.take() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, code) = match code {
            402 => ("card_error", Some("card_declined")),
            429 => ("rate_limit_error", Some("rate_limit")),
            500.. => ("api_error", None),
            _ => ("invalid_request_error", None),
        };
        return error(status, kind, code, "Failure injected by the fake.");
    }
    let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
    if bearer != Some(secret_key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided.",
        );
    }
    if method == Method::GET {
        return retrieve(inner, path);
    }
    if method != Method::POST {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!("Unrecognized request URL ({method}: {path})."),
        );
    }
    let Some(key) = idempotency_key.filter(|k| !k.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("idempotency_key_required"),
            "This fake requires an Idempotency-Key header on every POST.",
        );
    };
    let mut params = form.clone();
    params.sort();
    if let Some(kept) = inner.idempotency.get(key) {
        if kept.path == path && kept.params == params {
            return (kept.status, kept.body.clone());
        }
        return error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            None,
            &format!(
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with. Try using a key other than '{key}' if you meant to \
                 execute a different request."
            ),
        );
    }
    let (status, body) = match path {
        "/v1/checkout/sessions" => create_session(inner, &form),
        "/v1/refunds" => create_refund(inner, &form),
        _ => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!("Unrecognized request URL (POST: {path})."),
        ),
    };
    // Like Stripe, a request that was carried out is kept; one refused up front (a missing or
    // invalid parameter) is not, so it may be corrected and sent again under the same key.
    if status.is_success() {
        inner.idempotency.insert(
            key.to_owned(),
            Kept {
                path: path.to_owned(),
                params,
                status,
                body: body.clone(),
            },
        );
    }
    (status, body)
}

impl FakeStripe {
    /// Starts the fake on a free port of 127.0.0.1; requests must carry `Bearer <secret_key>`.
    pub async fn start(secret_key: &str) -> FakeStripe {
        let shared = Shared {
            secret_key: Arc::from(secret_key),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("the fake Stripe cannot bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the fake Stripe has no address: {e}"),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: the `api_base` to give the gateway.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The sessions created so far.
    pub fn sessions(&self) -> Vec<FakeSession> {
        self.shared.lock().sessions.clone()
    }

    /// The session `id`, if it was created.
    pub fn session(&self, id: &str) -> Option<FakeSession> {
        self.shared
            .lock()
            .sessions
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// The refunds made so far.
    pub fn refunds(&self) -> Vec<FakeRefund> {
        self.shared.lock().refunds.clone()
    }

    /// Every later response is sent `delay` after the request was carried out.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// The next request is answered with `status` and a Stripe-style error, and not carried out.
    pub fn fail_next(&self, status: u16) {
        self.shared.lock().fail_next = Some(status);
    }

    fn next_event_id(inner: &mut Inner) -> String {
        inner.next_event += 1;
        format!("evt_test_{}", inner.next_event)
    }

    /// A `checkout.session.completed` event: the customer paid session `session_id` in full.
    /// Panics if the fake created no such session.
    pub fn completed_event(&self, session_id: &str) -> Value {
        let mut inner = self.shared.lock();
        let Some(s) = inner.sessions.iter_mut().find(|s| s.id == session_id) else {
            panic!("the fake Stripe created no session {session_id}");
        };
        s.paid = true;
        let s = s.clone();
        let id = Self::next_event_id(&mut inner);
        let created = now();
        let object = session_json(&s, created);
        json!({
            "id": id,
            "object": "event",
            "api_version": "2024-06-20",
            "type": "checkout.session.completed",
            "created": created,
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "data": { "object": object },
        })
    }

    /// A `charge.refunded` event for the payment `payment_intent`, refunded in full: records the
    /// refund of what was left. The charge carries the PaymentIntent's metadata (what was sent
    /// as `payment_intent_data[metadata]`), as on Stripe. Panics if the fake made no such
    /// payment.
    pub fn refunded_event(&self, payment_intent: &str) -> Value {
        let mut inner = self.shared.lock();
        let Some(session) = inner
            .sessions
            .iter()
            .find(|s| s.payment_intent == payment_intent)
            .cloned()
        else {
            panic!("the fake Stripe made no payment {payment_intent}");
        };
        if refunded_so_far(&inner, payment_intent) < session.amount
            && let Err((status, body)) = record_refund(&mut inner, payment_intent, None)
        {
            panic!("the fake Stripe cannot refund {payment_intent}: {status} {body}");
        }
        let charge = charge_json(&inner, &session);
        let id = Self::next_event_id(&mut inner);
        json!({
            "id": id,
            "object": "event",
            "api_version": "2024-06-20",
            "type": "charge.refunded",
            "created": now(),
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "data": { "object": charge },
        })
    }
}

/// The `Stripe-Signature` header Stripe sends with `body` at `timestamp`:
/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed with the endpoint's
/// signing secret (`whsec_…`) as it is written.
pub fn stripe_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    format!("t={timestamp},v1={}", hex::encode(tag.as_ref()))
}

/// POSTs `event` to `url` as Stripe delivers a webhook (JSON, `Stripe-Signature` for `secret`
/// at `timestamp`); returns the status and body of the answer. Panics if `url` cannot be
/// reached.
pub async fn deliver(url: &str, secret: &str, timestamp: i64, event: &Value) -> (u16, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let body = event.to_string().into_bytes();
    let signature = stripe_signature(secret, timestamp, &body);
    let client = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("no HTTP client: {e}"),
    };
    let res = match client
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .header(
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("delivering the event to {url}: {e}"),
    };
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, text)
}
