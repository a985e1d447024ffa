//! The HTTP client for the local ProxySmart API: Basic auth, connect/total timeouts, no
//! redirects, a cap on body size, and exactly the operations the agent needs — nothing else
//! in the agent sends requests to ProxySmart.
//!
//! Idempotent reads (status, port list, free ports) are retried with backoff when they fail
//! fast (`Unavailable`: refused, reset, 5xx), at most `PROXYSMART_READ_ATTEMPTS` times. A
//! timeout is not retried (it already spent the time budget), and no write is ever retried
//! here: a `store_port` whose outcome is unknown is settled by re-reading the port list.
//! A write's reply says only how the box worded it ([`ReplyForm`]); whether it took is for
//! the caller to read back (`boxside::ports`).
//!
//! The HTML form path (`/conf/*`, `form`) may sit behind the web-panel login: a redirect to
//! `/modem/login` is answered by logging in with the same admin credentials and keeping
//! every cookie the box sets (the session cookie is not always the first), shared by the
//! client's clones, then asking once more.
//!
//! About 500 lines: every ProxySmart operation the agent uses, JSON and web panel, is a
//! method of this one client, so no other file builds a request to the box.

use super::error::ProxysmartError;
use super::form;
use super::wire::{self, PortEntry, ReplyForm};
use crate::base::backoff::{Backoff, PROXYSMART_READ, PROXYSMART_READ_ATTEMPTS};
use crate::base::masked::Masked;
use crate::config::ProxysmartConfig;
use crate::local::metrics::AgentMetrics;
use farmhand_protocol::Secret;
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// Largest body read from ProxySmart; a status of hundreds of modems is far below this.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A port to create or update with `store_port`.
#[derive(Debug, Clone, Serialize)]
#[allow(non_snake_case)]
pub struct StorePort {
    /// The modem.
    pub IMEI: String,
    /// Chosen by the agent when creating (`port` + 10 hex chars); the same id updates.
    pub portID: String,
    /// `farmhand-<allocation_id>` for ports the agent manages.
    pub portName: String,
    /// Buyer login.
    pub proxy_login: String,
    /// Buyer password (its Debug is masked).
    pub proxy_password: Secret,
    /// HTTP proxy port.
    pub http_port: u16,
    /// SOCKS5 proxy port.
    pub socks_port: u16,
    /// Expiry, box-local `YYYY-MM-DDTHH:MM` ("" = none).
    pub PROXY_VALID_BEFORE: String,
    /// Optional speed limits, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandlimin: Option<u64>,
    /// Optional speed limits, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandlimout: Option<u64>,
    /// Optional traffic quota, MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bw_quota: Option<u64>,
    /// What kind of quota `bw_quota` is (sent with it; see `ports::check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub QUOTA_TYPE: Option<&'static str>,
    /// What `bw_quota` counts (sent with it; see `ports::check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub QUOTA_DIRECTION: Option<&'static str>,
}

/// A client bound to one ProxySmart box.
#[derive(Debug, Clone)]
pub struct ProxysmartClient {
    http: Client,
    base: Url,
    username: String,
    password: Masked,
    /// Where call latencies and errors are counted (a private registry unless
    /// [`ProxysmartClient::with_metrics`] shares the agent's).
    metrics: Arc<AgentMetrics>,
    /// The web-panel session cookies (`name=value; …`), once logged in.
    panel_cookies: Arc<Mutex<Option<String>>>,
}

impl ProxysmartClient {
    /// Builds a client from the config (the URL was validated at load).
    pub fn new(config: &ProxysmartConfig) -> Result<Self, ProxysmartError> {
        crate::base::crypto::install_crypto_provider();
        let base = Url::parse(&config.url).map_err(|e| ProxysmartError::Unavailable {
            detail: format!("bad URL: {e}"),
        })?;
        let http = Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // ProxySmart is local to this box: never route it through HTTP(S)_PROXY.
            .no_proxy()
            .build()
            .map_err(|e| ProxysmartError::Unavailable {
                detail: format!("cannot build client: {e}"),
            })?;
        Ok(ProxysmartClient {
            http,
            base,
            username: config.username.clone(),
            password: config.password.clone(),
            metrics: Arc::default(),
            panel_cookies: Arc::default(),
        })
    }

    /// The same client, counting its calls in `metrics` (every error kind shows from the
    /// start, at zero).
    pub fn with_metrics(mut self, metrics: Arc<AgentMetrics>) -> Self {
        metrics.expect_proxysmart_errors(&ProxysmartError::KINDS);
        self.metrics = metrics;
        self
    }

    /// `GET /apix/show_status_json`: the raw modem entries.
    pub async fn show_status(&self) -> Result<Vec<Value>, ProxysmartError> {
        self.read("/apix/show_status_json", "status", wire::parse_status)
            .await
    }

    /// `GET /apix/show_single_status_json?arg=IMEI`: one modem's raw entry (an object, or
    /// an array of one on field boxes; older boxes take only a NICK and answer an error).
    pub async fn show_single_status(&self, imei: &str) -> Result<Value, ProxysmartError> {
        let request = self
            .get("/apix/show_single_status_json")?
            .query(&[("arg", imei)]);
        let body = self.fetch(request, &format!("modem {imei}")).await?;
        wire::parse_single_status(&body)
    }

    /// `GET /apix/list_ports_json`: every port on the box.
    pub async fn list_ports(&self) -> Result<Vec<PortEntry>, ProxysmartError> {
        self.read("/apix/list_ports_json", "port list", wire::parse_ports)
            .await
    }

    /// `GET /apix/get_free_tcp_ports`.
    pub async fn free_tcp_ports(&self) -> Result<Vec<u16>, ProxysmartError> {
        self.read(
            "/apix/get_free_tcp_ports",
            "free ports",
            wire::parse_free_ports,
        )
        .await
    }

    /// `GET /apix/bandwidth_report_all`: every port's traffic counters, raw (keyed by
    /// port id; see `counters` for the values).
    pub async fn bandwidth_report_all(
        &self,
    ) -> Result<serde_json::Map<String, Value>, ProxysmartError> {
        self.read(
            "/apix/bandwidth_report_all",
            "bandwidth report",
            wire::parse_bandwidth_report,
        )
        .await
    }

    /// `GET path`, parsed; retried while it fails fast (see the module header).
    async fn read<T>(
        &self,
        path: &str,
        what: &str,
        parse: fn(&str) -> Result<T, ProxysmartError>,
    ) -> Result<T, ProxysmartError> {
        let mut backoff = Backoff::new(PROXYSMART_READ);
        let mut attempt = 1;
        loop {
            let result = match self.fetch(self.get(path)?, what).await {
                Ok(body) => parse(&body),
                Err(e) => Err(e),
            };
            match result {
                Err(ProxysmartError::Unavailable { detail })
                    if attempt < PROXYSMART_READ_ATTEMPTS =>
                {
                    tracing::debug!(what, attempt, %detail, "ProxySmart read failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                other => return other,
            }
        }
    }

    /// `POST /crud/store_port` with form field `data` = the port as JSON.
    pub async fn store_port(&self, port: &StorePort) -> Result<ReplyForm, ProxysmartError> {
        let data = serde_json::to_string(port)
            .map_err(|e| ProxysmartError::malformed(format!("cannot encode port: {e}")))?;
        let request = self
            .http
            .post(self.url("/crud/store_port")?)
            .form(&[("data", data)]);
        let body = self
            .fetch(request, &format!("port {}", port.portID))
            .await?;
        wire::parse_action(&body)
    }

    /// `GET /apix/apply_port?arg=PORTID`: makes the stored port live.
    pub async fn apply_port(&self, port_id: &str) -> Result<ReplyForm, ProxysmartError> {
        self.action(
            "/apix/apply_port",
            "arg",
            port_id,
            &format!("port {port_id}"),
        )
        .await
    }

    /// `GET /apix/purge_port?arg=PORTID`: removes a port. Returns false when the box says
    /// the port does not exist (404, or HTTP 200 with "no such"/"not found").
    pub async fn purge_port(&self, port_id: &str) -> Result<bool, ProxysmartError> {
        match self
            .action(
                "/apix/purge_port",
                "arg",
                port_id,
                &format!("port {port_id}"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ProxysmartError::NotFound { .. }) => Ok(false),
            Err(ProxysmartError::Refused { message }) if says_missing(&message) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /apix/reset_modem_by_imei?IMEI=…`: asks the modem for a new IP.
    pub async fn reset_modem(&self, imei: &str) -> Result<ReplyForm, ProxysmartError> {
        self.action(
            "/apix/reset_modem_by_imei",
            "IMEI",
            imei,
            &format!("modem {imei}"),
        )
        .await
    }

    /// `GET /conf/add_port?imei=…`: the box's prefilled form for a new port on `imei` (its
    /// own port id, a free pair, credentials of its choosing).
    pub async fn add_port_form(
        &self,
        imei: &str,
    ) -> Result<Vec<(String, String)>, ProxysmartError> {
        let body = self.conf_get("/conf/add_port", &[("imei", imei)]).await?;
        form::inputs(&body)
    }

    /// `POST /conf/add_port?imei=…` with the form's fields. The box answers 302 whether it
    /// took the port or silently rejected it: only the port list tells.
    pub async fn save_add_port_form(
        &self,
        imei: &str,
        fields: &[(String, String)],
    ) -> Result<(), ProxysmartError> {
        self.conf_post("/conf/add_port", &[("imei", imei)], fields)
            .await
    }

    /// `GET /conf/edit_port/PORTID`: the port's form. Its password field is BLANK: posting
    /// it back as it is would wipe the password.
    pub async fn edit_port_form(
        &self,
        port_id: &str,
    ) -> Result<Vec<(String, String)>, ProxysmartError> {
        let path = format!("/conf/edit_port/{}", form::path_segment(port_id)?);
        let body = self.conf_get(&path, &[]).await?;
        form::inputs(&body)
    }

    /// `POST /conf/edit_port/PORTID` with the form's fields (302 either way, as a save).
    pub async fn save_edit_port_form(
        &self,
        port_id: &str,
        fields: &[(String, String)],
    ) -> Result<(), ProxysmartError> {
        let path = format!("/conf/edit_port/{}", form::path_segment(port_id)?);
        self.conf_post(&path, &[], fields).await
    }

    /// `GET /conf/delete_port/PORTID`: removes a port through the web panel.
    pub async fn delete_port_form(&self, port_id: &str) -> Result<(), ProxysmartError> {
        let path = format!("/conf/delete_port/{}", form::path_segment(port_id)?);
        self.conf_get(&path, &[]).await.map(drop)
    }

    /// A `/conf/*` page, logging in to the web panel first when the box asks for it.
    async fn conf_get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<String, ProxysmartError> {
        for attempt in 0..2 {
            let request = self.get(path)?.query(query);
            match self.conf_send(request, path).await? {
                form::Answer::Page(body) => return Ok(body),
                form::Answer::LoginWall if attempt == 0 => self.panel_login().await?,
                form::Answer::LoginWall => break,
                form::Answer::Redirect(_) => return Ok(String::new()),
            }
        }
        Err(login_refused())
    }

    /// Posts a `/conf/*` form; any redirect but to the login page is the box's "saved".
    async fn conf_post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        fields: &[(String, String)],
    ) -> Result<(), ProxysmartError> {
        for attempt in 0..2 {
            let request = self.http.post(self.url(path)?).query(query).form(fields);
            match self.conf_send(request, path).await? {
                form::Answer::LoginWall if attempt == 0 => self.panel_login().await?,
                form::Answer::LoginWall => break,
                form::Answer::Redirect(_) | form::Answer::Page(_) => return Ok(()),
            }
        }
        Err(login_refused())
    }

    /// `POST /modem/login` with the admin credentials; keeps every cookie it sets.
    async fn panel_login(&self) -> Result<(), ProxysmartError> {
        let fields = [
            ("username", self.username.as_str()),
            ("password", self.password.expose()),
        ];
        let request = self.http.post(self.url("/modem/login")?).form(&fields);
        let response = request
            .basic_auth(&self.username, Some(self.password.expose()))
            .send()
            .await
            .map_err(transport_error)?;
        let cookies: Vec<String> = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next())
            .map(|c| c.trim().to_string())
            .filter(|c| c.contains('='))
            .collect();
        if cookies.is_empty() {
            return Err(login_refused());
        }
        tracing::info!(
            cookies = cookies.len(),
            "logged in to the ProxySmart web panel"
        );
        if let Ok(mut jar) = self.panel_cookies.lock() {
            *jar = Some(cookies.join("; "));
        }
        Ok(())
    }

    /// Sends a `/conf/*` request with Basic auth and the panel cookies, and classifies the
    /// answer (a page, a redirect, the login wall).
    async fn conf_send(
        &self,
        mut request: RequestBuilder,
        what: &str,
    ) -> Result<form::Answer, ProxysmartError> {
        let cookies = self.panel_cookies.lock().ok().and_then(|jar| jar.clone());
        if let Some(cookies) = cookies {
            request = request.header(reqwest::header::COOKIE, cookies);
        }
        let started = std::time::Instant::now();
        let result = async {
            let response = request
                .basic_auth(&self.username, Some(self.password.expose()))
                .send()
                .await
                .map_err(transport_error)?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if !status.is_redirection() {
                check_status(status, what)?;
            }
            let body = read_body(response).await?;
            Ok(form::classify(status.as_u16(), &location, body))
        }
        .await;
        self.metrics.proxysmart_call(
            started.elapsed(),
            result.as_ref().err().map(ProxysmartError::kind),
        );
        result
    }

    async fn action(
        &self,
        path: &str,
        key: &str,
        value: &str,
        what: &str,
    ) -> Result<ReplyForm, ProxysmartError> {
        let request = self.get(path)?.query(&[(key, value)]);
        let body = self.fetch(request, what).await?;
        wire::parse_action(&body)
    }

    fn url(&self, path: &str) -> Result<Url, ProxysmartError> {
        // Keep any path prefix of the base URL (boxes behind a reverse proxy).
        let joined = format!("{}{}", self.base.as_str().trim_end_matches('/'), path);
        Url::parse(&joined).map_err(|e| ProxysmartError::Unavailable {
            detail: format!("bad URL: {e}"),
        })
    }

    fn get(&self, path: &str) -> Result<RequestBuilder, ProxysmartError> {
        Ok(self.http.get(self.url(path)?))
    }

    /// One HTTP call, timed and counted in the agent's metrics.
    async fn fetch(&self, request: RequestBuilder, what: &str) -> Result<String, ProxysmartError> {
        let started = std::time::Instant::now();
        let result = self.fetch_once(request, what).await;
        self.metrics.proxysmart_call(
            started.elapsed(),
            result.as_ref().err().map(ProxysmartError::kind),
        );
        result
    }

    /// Sends with Basic auth, maps transport and status errors, returns the body as text.
    async fn fetch_once(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<String, ProxysmartError> {
        let response = request
            .basic_auth(&self.username, Some(self.password.expose()))
            .send()
            .await
            .map_err(transport_error)?;
        check_status(response.status(), what)?;
        read_body(response).await
    }
}

/// The body as text, refusing one over `MAX_BODY_BYTES`.
async fn read_body(mut response: reqwest::Response) -> Result<String, ProxysmartError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ProxysmartError::malformed(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| ProxysmartError::malformed("body is not UTF-8"))
}

fn login_refused() -> ProxysmartError {
    ProxysmartError::Refused {
        message: "the web panel login did not take the configured credentials".to_string(),
    }
}

fn says_missing(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("no such") || lower.contains("not found")
}

fn check_status(status: StatusCode, what: &str) -> Result<(), ProxysmartError> {
    match status.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(ProxysmartError::Unauthorized {
            status: status.as_u16(),
        }),
        404 => Err(ProxysmartError::NotFound {
            what: what.to_string(),
        }),
        300..=399 => Err(ProxysmartError::malformed(format!(
            "redirect (HTTP {status}), e.g. to a login page"
        ))),
        429 | 500..=599 => Err(ProxysmartError::Unavailable {
            detail: format!("HTTP {status}"),
        }),
        _ => Err(ProxysmartError::Refused {
            message: format!("HTTP {status} for {what}"),
        }),
    }
}

fn transport_error(e: reqwest::Error) -> ProxysmartError {
    if e.is_timeout() {
        return ProxysmartError::Timeout;
    }
    // Strip the URL: it is harmless, but keeps messages short and free of query values.
    let detail = farmhand_ops::error_chain(&e.without_url());
    ProxysmartError::Unavailable { detail }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
