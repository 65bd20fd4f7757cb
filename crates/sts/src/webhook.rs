//! The approval webhook: a POST telling a chat or ticket system that a request waits for
//! approval (`approval.pending`) and later how it was decided (`approval.approved`,
//! `approval.denied`), so a message can link to the approval and then be updated.
//!
//! Each delivery runs on a task of its own: it never holds, delays or grants a request,
//! and a receiver that is down only misses the announcement. Bodies never carry the
//! approval code nor any token. With a secret, each attempt is signed
//! `X-Mayfly-Signature: t=UNIX,v1=HEX(HMAC-SHA256(secret, "{t}.{body}"))`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::approval::{Approver, Request};

/// `[approval_webhook]` as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalWebhookEntry {
    /// Where to POST: `https://`, or `http://` on loopback only.
    pub url: String,
    /// A file holding the secret that signs deliveries (one line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Or the name of an environment variable holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Extra CA certificates (PEM) for reaching the receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one attempt may take (`5s` when not set), as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Attempts per event, 1 to 10 (4 when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// A validated `[approval_webhook]`.
#[derive(Clone, Debug)]
pub struct ApprovalWebhook {
    /// Where to POST.
    pub url: url::Url,
    /// The signing secret, when one is configured.
    pub secret: Option<SecretString>,
    /// Extra CA certificates for reaching the receiver.
    pub ca_file: Option<PathBuf>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Attempts per event.
    pub attempts: u32,
}

impl PartialEq for ApprovalWebhook {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        let secret = |w: &Self| w.secret.as_ref().map(|s| s.expose_secret().to_owned());
        (&self.url, &self.ca_file, self.timeout, self.attempts)
            == (&other.url, &other.ca_file, other.timeout, other.attempts)
            && secret(self) == secret(other)
    }
}

/// Most attempts per event: retries are for a receiver that blinks, not one that is gone.
const MAX_ATTEMPTS: u32 = 10;
/// The wait before the first retry; each further one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

impl ApprovalWebhook {
    /// Validates the entry and reads its secret. Errors never quote the URL, which may
    /// itself be a credential (a chat's incoming-webhook URL), nor the secret.
    pub fn from_entry(entry: ApprovalWebhookEntry) -> Result<Self, String> {
        let url = url::Url::parse(&entry.url).map_err(|e| format!("approval_webhook: `url` is not a URL ({e})"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err("approval_webhook: `url` must be https (plain http only on loopback)".into()),
        }
        let secret = match (entry.secret_file, entry.secret_env) {
            (Some(_), Some(_)) => {
                return Err("approval_webhook: set `secret_file` or `secret_env`, not both".into());
            }
            (Some(path), None) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("approval_webhook: cannot read `secret_file` `{}`: {e}", path.display()))?,
            ),
            (None, Some(name)) => Some(std::env::var(&name).map_err(|_| {
                format!("approval_webhook: environment variable `{name}` (`secret_env`) is not set or not UTF-8")
            })?),
            (None, None) => None,
        };
        let secret = match secret.as_deref().map(str::trim) {
            Some("") => return Err("approval_webhook: the signing secret is empty".into()),
            Some(text) => Some(SecretString::from(text)),
            None => None,
        };
        let timeout = match entry.timeout.as_deref() {
            Some(text) => mayfly_core::parse_duration(text).map_err(|e| format!("approval_webhook: timeout: {e}"))?,
            None => Duration::from_secs(5),
        };
        if timeout.is_zero() {
            return Err("approval_webhook: `timeout` must be at least 1s".into());
        }
        let attempts = entry.attempts.unwrap_or(4);
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            return Err(format!("approval_webhook: `attempts` is 1 to {MAX_ATTEMPTS}"));
        }
        Ok(Self { url, secret, ca_file: entry.ca_file, timeout, attempts })
    }
}

/// The `X-Mayfly-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub(crate) fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How an approval was decided, for `approval.approved` and `approval.denied`.
pub(crate) struct Decision<'a> {
    pub(crate) approved: bool,
    pub(crate) approver: &'a Approver,
    pub(crate) reason: Option<&'a str>,
}

/// The body announcing approval `id`: what is asked, by whom, for which group, until when;
/// and with a decision, who decided and why.
pub(crate) fn body(
    id: &str,
    approval_uri: &str,
    request: &Request,
    expires_at: time::OffsetDateTime,
    decision: Option<&Decision<'_>>,
) -> Value {
    let binding = &request.binding;
    let event = match decision {
        None => "approval.pending",
        Some(d) if d.approved => "approval.approved",
        Some(_) => "approval.denied",
    };
    let expires_at = expires_at
        .replace_nanosecond(0)
        .unwrap_or(expires_at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut body = json!({
        "event": event,
        "id": id,
        "approval_uri": approval_uri,
        "operation": request.operation,
        "target": request.target,
        "audience": binding.audience,
        "scopes": binding.scopes,
        "requester": {"issuer": binding.issuer, "subject": binding.subject},
    });
    if let Some(act) = &binding.act {
        body["actor"] = act.clone();
    }
    // What the client says it is doing: shown to people, never verified.
    if let Some(intent) = &request.intent {
        body["intent"] = json!({"claimed": intent});
    }
    body["policy"] = Value::from(request.policies.join(", "));
    body["group"] = Value::from(request.group.as_str());
    body["expires_at"] = Value::from(expires_at);
    if let Some(decision) = decision {
        let audit = &decision.approver.audit;
        let mut approver = json!({"issuer": audit["iss"], "subject": audit["sub"]});
        if let Some(email) = audit.get("email") {
            approver["email"] = email.clone();
        }
        body["approver"] = approver;
        body["reason"] = decision.reason.map_or(Value::Null, Value::from);
    }
    body
}

/// Sends announcements to the configured receiver.
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: url::Url,
    secret: Option<SecretString>,
    attempts: u32,
    timeout: Duration,
}

impl Webhook {
    pub(crate) fn new(config: &ApprovalWebhook) -> Result<Self, String> {
        let mut builder =
            reqwest::Client::builder().timeout(config.timeout).redirect(reqwest::redirect::Policy::none()).no_proxy();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("approval_webhook: cannot read `ca_file` `{}`: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("approval_webhook: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(Self {
            client: builder.build().map_err(|e| format!("approval_webhook: {e}"))?,
            url: config.url.clone(),
            secret: config.secret.clone(),
            attempts: config.attempts,
            timeout: config.timeout,
        })
    }

    /// Delivers `body` on a task of its own, retrying with backoff until `deadline` (the
    /// approval's expiry: past it, the news is stale). Must be called on the runtime.
    pub(crate) fn announce(&self, body: &Value, deadline: Instant) {
        let delivery = Delivery {
            client: self.client.clone(),
            url: self.url.clone(),
            secret: self.secret.clone(),
            attempts: self.attempts,
            timeout: self.timeout,
            event: body["event"].as_str().unwrap_or_default().to_owned(),
            id: crate::server::random_id(),
            body: serde_json::to_vec(body).expect("a JSON value serialises"),
        };
        tokio::spawn(delivery.run(deadline));
    }
}

/// One event on its way, with its attempts left.
struct Delivery {
    client: reqwest::Client,
    url: url::Url,
    secret: Option<SecretString>,
    attempts: u32,
    timeout: Duration,
    event: String,
    /// `X-Mayfly-Delivery`: the same on every attempt, so a receiver can drop repeats.
    id: String,
    body: Vec<u8>,
}

impl Delivery {
    async fn run(self, deadline: Instant) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=self.attempts {
            let Err(why) = self.attempt().await else { return };
            let retry = attempt < self.attempts && Instant::now() + backoff < deadline;
            let next = if retry { format!("retrying in {}s", backoff.as_secs()) } else { "giving up".to_owned() };
            // The receiver named by its origin only: a webhook URL's path may be a credential.
            crate::log::error(&format!(
                "approval webhook {} (delivery {}) to {}: attempt {attempt} of {} failed: {why}; {next}",
                self.event,
                self.id,
                self.url.origin().ascii_serialization(),
                self.attempts,
            ));
            if !retry {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Mayfly-Event", &self.event)
            .header("X-Mayfly-Delivery", &self.id)
            .body(self.body.clone());
        if let Some(secret) = &self.secret {
            // Signed afresh at each attempt, so a retry is not refused as stale.
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            request =
                request.header("X-Mayfly-Signature", signature(secret.expose_secret().as_bytes(), now, &self.body));
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(e) if e.is_timeout() => Err(format!("no answer within {}s", self.timeout.as_secs_f32())),
            Err(e) => Err(root_cause(&e.without_url())),
        }
    }
}

/// The innermost cause of an error: `Connection refused` rather than `error sending request`.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_body() {
        // As `printf '%s' '1700000000.{"event":"approval.pending"}' | openssl dgst -sha256 -hmac whsec-test`.
        assert_eq!(
            signature(b"whsec-test", 1_700_000_000, br#"{"event":"approval.pending"}"#),
            "t=1700000000,v1=2f880c3c4be126244b8b7792ef1193cd7378b3fa2449089879fc047c9337152c"
        );
        // Another time, body or secret signs differently.
        let base = signature(b"whsec-test", 1_700_000_000, b"{}");
        assert_ne!(base, signature(b"whsec-test", 1_700_000_001, b"{}"));
        assert_ne!(base, signature(b"whsec-test", 1_700_000_000, b"{ }"));
        assert_ne!(base, signature(b"whsec-other", 1_700_000_000, b"{}"));
    }

    fn entry(url: &str) -> ApprovalWebhookEntry {
        ApprovalWebhookEntry { url: url.into(), ..Default::default() }
    }

    #[test]
    fn the_url_is_https_or_loopback_http_and_errors_do_not_quote_it() {
        for url in
            ["https://chat.example/hooks/T0/B0/s3cr3t", "http://127.0.0.1:9/x", "http://[::1]:9/", "http://localhost/"]
        {
            let hook = ApprovalWebhook::from_entry(entry(url)).unwrap();
            assert_eq!((hook.timeout, hook.attempts), (Duration::from_secs(5), 4));
        }
        for url in ["http://chat.example/hooks/s3cr3t", "ftp://127.0.0.1/s3cr3t", "s3cr3t"] {
            let error = ApprovalWebhook::from_entry(entry(url)).unwrap_err();
            assert!(!error.contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn the_secret_comes_from_a_file_or_the_environment_and_is_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "whsec-from-file\n").unwrap();
        let hook = ApprovalWebhook::from_entry(ApprovalWebhookEntry {
            secret_file: Some(file.clone()),
            timeout: Some("2s".into()),
            attempts: Some(2),
            ..entry("https://chat.example/")
        })
        .unwrap();
        assert_eq!(hook.secret.unwrap().expose_secret(), "whsec-from-file");
        assert!(
            !format!(
                "{:?}",
                ApprovalWebhook::from_entry(ApprovalWebhookEntry {
                    secret_file: Some(file.clone()),
                    ..entry("https://chat.example/")
                })
            )
            .contains("whsec-from-file")
        );
        // An environment variable that is certainly unset: naming it is refused clearly.
        let error = ApprovalWebhook::from_entry(ApprovalWebhookEntry {
            secret_env: Some("MAYFLY_TEST_UNSET_WEBHOOK_SECRET".into()),
            ..entry("https://chat.example/")
        })
        .unwrap_err();
        assert!(error.contains("`MAYFLY_TEST_UNSET_WEBHOOK_SECRET` (`secret_env`) is not set"), "{error}");
        let both = ApprovalWebhookEntry {
            secret_file: Some(file.clone()),
            secret_env: Some("X".into()),
            ..entry("https://chat.example/")
        };
        assert!(ApprovalWebhook::from_entry(both).unwrap_err().contains("not both"));
        std::fs::write(&file, "\n").unwrap();
        let empty = ApprovalWebhookEntry { secret_file: Some(file), ..entry("https://chat.example/") };
        assert!(ApprovalWebhook::from_entry(empty).unwrap_err().contains("empty"));
        for attempts in [0, 11] {
            let error = ApprovalWebhook::from_entry(ApprovalWebhookEntry {
                attempts: Some(attempts),
                ..entry("https://chat.example/")
            })
            .unwrap_err();
            assert!(error.contains("`attempts` is 1 to 10"), "{error}");
        }
        assert!(
            ApprovalWebhook::from_entry(ApprovalWebhookEntry {
                timeout: Some("0s".into()),
                ..entry("https://chat.example/")
            })
            .is_err()
        );
    }
}
