//! A small blocking client of the API, for the `fastpath numbers` CLI and the tests.
//! `ureq` without TLS: the API listens on a trusted address (loopback by default).

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::{CodeRequest, ErrorBody, Health, RegisterRequest, RevokeRequest, StartRequest};
use crate::registry::{
    AuditEntry, Method, NumberRecord,
    number::{NumberError, parse_e164},
    service::Started,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Number(#[from] NumberError),
    #[error("cannot reach the API at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{message} (HTTP {status}, {kind})")]
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("unexpected answer from the API (HTTP {status}): {body}")]
    Decode { status: u16, body: String },
}

/// An HTTP client for the daemon's own endpoints (API, `/status`, `/routes`): statuses are
/// answers to read, not errors, and an HTTP(S)_PROXY from the environment must not apply
/// (the daemon is local).
pub(crate) fn local_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = local_agent(Duration::from_secs(30));
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source: Box::new(source),
        };
        let response = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(b) => r.send_json(b),
                    None => r.send_empty(),
                }
            }
        }
        .map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().map_err(transport)?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text)
                .map_err(|_| ClientError::Decode { status, body: text });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => Err(ClientError::Api {
                status,
                kind: e.error,
                message: e.message,
            }),
            Err(_) => Err(ClientError::Decode { status, body: text }),
        }
    }

    pub fn health(&self) -> Result<Health, ClientError> {
        self.call("GET", "/health", None::<&()>)
    }

    pub fn register(&self, request: &RegisterRequest) -> Result<NumberRecord, ClientError> {
        self.call("POST", "/v1/numbers", Some(request))
    }

    pub fn list(&self, account: Option<&str>) -> Result<Vec<NumberRecord>, ClientError> {
        match account {
            // Percent-encode by hand: accounts are free text.
            Some(a) => {
                let encoded: String = a
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                            char::from(b).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                self.call(
                    "GET",
                    &format!("/v1/numbers?account={encoded}"),
                    None::<&()>,
                )
            }
            None => self.call("GET", "/v1/numbers", None::<&()>),
        }
    }

    /// Numbers are checked here too, so that only digits go into the URL path.
    pub fn show(&self, number: &str) -> Result<NumberRecord, ClientError> {
        let n = parse_e164(number)?;
        self.call("GET", &format!("/v1/numbers/{n}"), None::<&()>)
    }

    pub fn audit(&self, number: &str) -> Result<Vec<AuditEntry>, ClientError> {
        let n = parse_e164(number)?;
        self.call("GET", &format!("/v1/numbers/{n}/audit"), None::<&()>)
    }

    pub fn revoke(
        &self,
        number: &str,
        reason: Option<String>,
    ) -> Result<NumberRecord, ClientError> {
        let n = parse_e164(number)?;
        self.call(
            "POST",
            &format!("/v1/numbers/{n}/revoke"),
            Some(&RevokeRequest { reason }),
        )
    }

    pub fn start_verification(&self, number: &str, method: Method) -> Result<Started, ClientError> {
        let n = parse_e164(number)?;
        self.call(
            "POST",
            &format!("/v1/numbers/{n}/verification"),
            Some(&StartRequest { method }),
        )
    }

    pub fn submit_code(&self, number: &str, code: &str) -> Result<NumberRecord, ClientError> {
        let n = parse_e164(number)?;
        self.call(
            "POST",
            &format!("/v1/numbers/{n}/verification/code"),
            Some(&CodeRequest { code: code.into() }),
        )
    }
}
