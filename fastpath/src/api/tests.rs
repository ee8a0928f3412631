//! The API in-process (no sockets): status codes, JSON errors, auth.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiState, resolve_token, router};
use crate::registry::{Registry, Settings, SqliteStore, fake_trunk::FakeTrunk};

const TOKEN: &str = "test-token-0123456789";

fn app() -> (Router, FakeTrunk) {
    let trunk = FakeTrunk::default();
    let registry = Registry::new(
        SqliteStore::in_memory().unwrap(),
        trunk.clone(),
        Settings::default(),
    );
    let state = ApiState {
        registry,
        token: Some(Arc::from(TOKEN)),
        sync: None,
    };
    (router(state), trunk)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{status}: body is not JSON: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

fn registration() -> Value {
    json!({
        "number": "+1 555 010 0001",
        "account": "acme",
        "peer": {"host": "198.51.100.2", "port": 5060, "transport": "udp"}
    })
}

#[tokio::test]
async fn full_enrollment_by_message() {
    let (app, trunk) = app();
    let t = Some(TOKEN);
    let (s, v) = call(&app, "POST", "/v1/numbers", Some(registration()), t).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "pending");
    assert_eq!(v["opt_in"], true);
    let (s, _) = call(&app, "POST", "/v1/numbers", Some(registration()), t).await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (s, v) = call(
        &app,
        "POST",
        "/v1/numbers/15550100001/verification",
        Some(json!({"method": "message"})),
        t,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(v.get("code").is_none());
    let (s, v) = call(
        &app,
        "POST",
        "/v1/numbers/15550100001/verification/code",
        Some(json!({"code": "not-it"})),
        t,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("wrong_code"))
    );
    let code = trunk.last_code();
    let (s, v) = call(
        &app,
        "POST",
        "/v1/numbers/15550100001/verification/code",
        Some(json!({"code": code})),
        t,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "verified");

    let (s, v) = call(&app, "GET", "/v1/numbers?account=acme", None, t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, v) = call(&app, "GET", "/v1/numbers?account=nobody", None, t).await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 0));
    let (s, v) = call(
        &app,
        "POST",
        "/v1/numbers/+15550100001/revoke",
        Some(json!({"reason": "test"})),
        t,
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("revoked")));
    let (s, v) = call(&app, "GET", "/v1/numbers/15550100001/audit", None, t).await;
    assert_eq!(s, StatusCode::OK);
    let states: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "verified", "revoked"]);
    let (s, v) = call(&app, "POST", "/v1/numbers/15550100001/revoke", None, t).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state"))
    );
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_that_says_what_was_wrong() {
    let (app, _) = app();
    let t = Some(TOKEN);
    let mut bad_number = registration();
    bad_number["number"] = json!("alice");
    let mut bad_host = registration();
    bad_host["peer"]["host"] = json!("pbx.example");
    let mut bad_port = registration();
    bad_port["peer"]["port"] = json!(70000);
    let mut unknown_field = registration();
    unknown_field["colour"] = json!("red");
    let mut bad_transport = registration();
    bad_transport["peer"]["transport"] = json!("carrier-pigeon");
    // (method, uri, body, status, error kind, what the message must mention)
    type Case = (
        &'static str,
        &'static str,
        Option<Value>,
        StatusCode,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/numbers",
            Some(bad_number),
            StatusCode::BAD_REQUEST,
            "bad_number",
            "E.164",
        ),
        (
            "POST",
            "/v1/numbers",
            Some(bad_host),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
            "peer.host",
        ),
        (
            "POST",
            "/v1/numbers",
            Some(bad_port),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
            "peer.port",
        ),
        (
            "POST",
            "/v1/numbers",
            Some(unknown_field),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
            "colour",
        ),
        (
            "POST",
            "/v1/numbers",
            Some(bad_transport),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
            "transport",
        ),
        (
            "GET",
            "/v1/numbers/15550100009",
            None,
            StatusCode::NOT_FOUND,
            "unknown_number",
            "15550100009",
        ),
        (
            "GET",
            "/v1/numbers/12ab",
            None,
            StatusCode::BAD_REQUEST,
            "bad_number",
            "E.164",
        ),
        (
            "POST",
            "/v1/numbers/15550100009/verification",
            Some(json!({"method": "fax"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
            "method",
        ),
        (
            "POST",
            "/v1/numbers/15550100009/verification",
            Some(json!({"method": "call"})),
            StatusCode::NOT_FOUND,
            "unknown_number",
            "not registered",
        ),
        (
            "POST",
            "/v1/numbers/15550100009/verification/code",
            Some(json!({"code": "1"})),
            StatusCode::NOT_FOUND,
            "unknown_number",
            "not registered",
        ),
        (
            "GET",
            "/v1/numbers?colour=red",
            None,
            StatusCode::BAD_REQUEST,
            "bad_query",
            "colour",
        ),
        (
            "GET",
            "/v2/whatever",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            "endpoint",
        ),
        (
            "DELETE",
            "/v1/numbers",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method",
        ),
    ];
    for (method, uri, body, status, kind, says) in cases {
        let (s, v) = call(&app, method, uri, body, t).await;
        assert_eq!(s, status, "{method} {uri}: {v}");
        assert_eq!(v["error"], kind, "{method} {uri}: {v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{method} {uri}: {message:?} does not say {says:?}"
        );
    }
    // Not JSON at all.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/numbers")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Too large, and not JSON: JSON errors too.
    let big = json!({"number": "1".repeat(20_000), "account": "a", "peer": {"host": "198.51.100.2", "port": 5060}});
    let (s, v) = call(&app, "POST", "/v1/numbers", Some(big), t).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("bad_json"))
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v1/numbers/15550100001/revoke")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("please"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "bad_json");
    // Verification needs a registered, verifiable number: missed call is not configured here.
    call(&app, "POST", "/v1/numbers", Some(registration()), t).await;
    let (s, v) = call(
        &app,
        "POST",
        "/v1/numbers/15550100001/verification",
        Some(json!({"method": "missed_call"})),
        t,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_configured"))
    );
    let (s, v) = call(
        &app,
        "POST",
        "/v1/numbers/15550100001/verification/code",
        Some(json!({"code": "123456"})),
        t,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("no_verification"))
    );
}

#[tokio::test]
async fn token_is_required_except_for_health() {
    let (app, _) = app();
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (s, v) = call(&app, "GET", "/v1/numbers", None, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(v["error"], "unauthorized");
    }
    let (s, v) = call(&app, "GET", "/health", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let (app, _) = app();
    let t = Some(TOKEN);
    call(&app, "POST", "/v1/numbers", Some(registration()), t).await;
    for _ in 0..3 {
        let (s, _) = call(
            &app,
            "POST",
            "/v1/numbers/15550100001/verification",
            Some(json!({"method": "message"})),
            t,
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let req = Request::builder()
        .method("POST")
        .uri("/v1/numbers/15550100001/verification")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"method":"message"}"#))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
}

#[test]
fn no_token_only_on_loopback() {
    let lo = "127.0.0.1:8080".parse().unwrap();
    let any = "0.0.0.0:8080".parse().unwrap();
    assert_eq!(resolve_token(lo, None, None).unwrap(), None);
    assert!(
        resolve_token(any, None, None)
            .unwrap_err()
            .to_string()
            .contains("without a token")
    );
    assert!(resolve_token(any, None, Some("   ".into())).is_err());
    assert_eq!(
        resolve_token(any, None, Some(TOKEN.into()))
            .unwrap()
            .as_deref(),
        Some(TOKEN)
    );
    assert_eq!(
        resolve_token(any, Some("from-config-0123456789"), Some(TOKEN.into()))
            .unwrap()
            .as_deref(),
        Some("from-config-0123456789")
    );
    assert!(resolve_token(any, Some("short"), None).is_err());
}
