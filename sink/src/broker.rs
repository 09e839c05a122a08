//! Uploading through a vendor's broker (`telemetry-broker`).
//!
//! End users' machines hold no cloud credentials. With `auth = "broker"`
//! the daemon asks the vendor's broker for permission to write one batch:
//!
//! 1. `POST {broker}/v1/upload` with an [`UploadRequest`]: the batch's key
//!    parts, its length and the SHA-256 of its (compressed) body.
//! 2. The broker checks them and answers `200` with a [`Grant`]: a
//!    presigned `PUT` URL, valid for at most 10 minutes, whose signature
//!    covers `Content-Length`, `Content-Type`, `If-None-Match: *` and
//!    `x-amz-checksum-sha256`. Any other status carries an [`ErrorBody`]
//!    naming the request field at fault.
//! 3. The daemon sends the body to that URL with exactly the granted
//!    headers. The store refuses another body (the checksum is signed), an
//!    overwrite (`412`: the batch is already there, so it is delivered) and
//!    a late request (`403 Request has expired`: ask the broker again).
//!
//! [`put_via_broker`] does all three and maps every answer onto
//! [`UploadError`]; [`http_client`] is the one place the HTTP client is
//! built.

use crate::key::BatchKey;
use crate::net::HttpClient;
use crate::put::{Delivered, UploadError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The broker's upload endpoint, under its base URL.
pub const UPLOAD_PATH: &str = "/v1/upload";

/// The broker's health endpoint.
pub const HEALTH_PATH: &str = "/healthz";

/// Longest [`UploadRequest`] body a broker reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Most builds an [`UploadRequest`] names; a broker refuses more.
pub const MAX_BUILDS: usize = 64;

/// Longest build an [`UploadRequest`] names, in bytes; a broker refuses
/// longer.
pub const MAX_BUILD_BYTES: usize = 64;

/// Most bytes the builds may take in a request's JSON: the other fields
/// at their longest take under 400, so a request stays well under
/// [`MAX_REQUEST_BYTES`].
pub const MAX_BUILDS_JSON_BYTES: usize = 2048;

/// Longest broker or store answer the client reads, in bytes: grants and
/// error bodies are small, and a hostile server must not make us buffer
/// more.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest `Retry-After` honoured; a longer one is clamped so a broken
/// broker cannot stop uploads for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// `Retry-After` assumed when a `429`/`503` carries none (or a date).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the daemon asks the broker for: permission to write one batch.
/// Every field is checked by the broker; the key is built from them, never
/// taken from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRequest {
    /// The product (must have a manifest at the broker).
    pub product: String,
    /// The batch's day, `YYYY-MM-DD` (must be within the broker's window).
    pub day: String,
    /// First 8 lowercase hex digits of the anonymous machine ID.
    pub machine8: String,
    /// First event sequence number in the batch.
    pub first_seq: i64,
    /// Last event sequence number in the batch.
    pub last_seq: i64,
    /// The body's length in bytes (signed into the URL as `Content-Length`).
    pub bytes: u64,
    /// SHA-256 of the body, 64 lowercase hex digits (signed into the URL as
    /// `x-amz-checksum-sha256`, base64, so the URL carries no other body).
    pub sha256: String,
    /// The builds (CLI versions) whose events the batch holds, so a broker
    /// can refuse a retired build with `410`. Optional: empty is not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<String>,
}

impl UploadRequest {
    /// The request for `body` stored under `key`.
    pub fn new(key: &BatchKey, body: &[u8]) -> UploadRequest {
        UploadRequest {
            product: key.product.clone(),
            day: key.date.clone(),
            machine8: key.machine8.clone(),
            first_seq: key.first,
            last_seq: key.last,
            bytes: body.len() as u64,
            sha256: hex_sha256(body),
            builds: Vec::new(),
        }
    }

    /// The key parts this request claims (unchecked: see
    /// [`BatchKey::validate`]).
    pub fn parts(&self) -> BatchKey {
        BatchKey {
            product: self.product.clone(),
            date: self.day.clone(),
            machine8: self.machine8.clone(),
            first: self.first_seq,
            last: self.last_seq,
        }
    }

    /// Name `builds`, if they fit what a broker accepts; otherwise none.
    /// Naming none only skips the broker's per-build check (a whole
    /// product can still be retired), while a request the broker refuses
    /// as too large would be refused again at every retry and hold up
    /// every batch behind it.
    pub fn with_builds(mut self, builds: Vec<String>) -> UploadRequest {
        let fits = builds.len() <= MAX_BUILDS
            && builds.iter().all(|b| b.len() <= MAX_BUILD_BYTES)
            && serde_json::to_vec(&builds).is_ok_and(|j| j.len() <= MAX_BUILDS_JSON_BYTES);
        self.builds = if fits { builds } else { Vec::new() };
        self
    }
}

/// Lowercase hex SHA-256 of `body`.
pub fn hex_sha256(body: &[u8]) -> String {
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The broker's `200` answer: how to send the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The presigned URL.
    pub url: String,
    /// The HTTP method (`PUT`).
    pub method: String,
    /// Headers to send exactly as given (lowercase names): they are signed,
    /// so leaving one out or changing it makes the store refuse the PUT.
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working (RFC 3339, UTC).
    pub expires_at: String,
    /// The key the object will have (under the broker's prefix), so the
    /// daemon's receipt names it; it ends in the start of the body's hash
    /// ([`BatchKey::render_with_digest`]). Absent from older brokers,
    /// whose keys are the batch's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What a PUT through a broker did, and under which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDelivery {
    /// Stored, or already there.
    pub delivered: Delivered,
    /// The key the broker granted ([`Grant::key`]), when it said.
    pub key: Option<String>,
}

/// The body of every broker answer other than `200`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, naming the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The [`UploadRequest`] field at fault (`product`, `day`, ...), or
    /// `body` for the request as a whole; absent when no field is (a rate
    /// limit, an internal error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A sentence saying what is wrong and what to do.
    pub message: String,
}

/// Send `body`, to be stored under `key`, through the broker at
/// `broker_url` (its base URL, as in the manifest's `upload.broker`), all
/// within `timeout`, with `client` ([`crate::net::http_client`]: the
/// proxy and CA bundle apply; built once per broker and reused).
///
/// `412` from the store means an earlier attempt already wrote the batch:
/// [`Delivered::AlreadyThere`]. A URL that expired before the body got
/// there is asked for once more. The broker's `429`/`503` become
/// [`UploadError::Throttled`] with its `Retry-After`, `400`/`413`
/// [`UploadError::Rejected`] with the field it named, `410` naming
/// `builds` (every build in the batch retired) `Rejected` too, any other
/// `410` [`UploadError::Retired`] (the product). Failures to reach the broker or the store
/// are [`UploadError::S3`] (transient unless the store's answer says
/// otherwise).
pub async fn put_via_broker(
    client: &HttpClient,
    broker_url: &str,
    key: &BatchKey,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<BrokerDelivery, UploadError> {
    put_request_via_broker(
        client,
        broker_url,
        UploadRequest::new(key, &body),
        body,
        timeout,
    )
    .await
}

/// [`put_via_broker`] with a request the caller built (for example with
/// [`UploadRequest::builds`] filled in).
pub async fn put_request_via_broker(
    client: &HttpClient,
    broker_url: &str,
    request: UploadRequest,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<BrokerDelivery, UploadError> {
    let deadline = Instant::now() + timeout;
    let broker_url = broker_url.trim_end_matches('/');
    let what = format!("{broker_url}{UPLOAD_PATH}");
    let transport = |message: String, permanent: bool| UploadError::S3 {
        bucket: format!("(via broker {broker_url})"),
        key: format!(
            "{}/{}/{}-{}-{}",
            request.product, request.day, request.machine8, request.first_seq, request.last_seq
        ),
        message,
        permanent,
    };
    let request_json = serde_json::to_vec(&request)
        .map_err(|e| transport(format!("cannot encode the request: {e}"), true))?;
    let body = Bytes::from(body);
    // One retry, only for a URL that expired on its way: a second expiry
    // means the clocks disagree, which asking again cannot fix.
    let mut asked_again = false;
    loop {
        let ask = Request::builder()
            .method(Method::POST)
            .uri(&what)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(request_json.clone())))
            .map_err(|e| transport(format!("bad broker URL {what:?}: {e}"), true))?;
        let (status, headers, answer) = exchange(client, ask, deadline)
            .await
            .map_err(|e| transport(format!("POST {what}: {e}"), false))?;
        if status != StatusCode::OK {
            return Err(broker_error(
                broker_url, &request, status, &headers, &answer,
            ));
        }
        let grant: Grant = serde_json::from_slice(&answer).map_err(|e| {
            transport(
                format!("POST {what}: the broker's answer is not a grant: {e}"),
                false,
            )
        })?;
        check_grant(&grant, &request, body.len())
            .map_err(|e| transport(format!("the broker granted an unsafe request: {e}"), true))?;
        let mut put = Request::builder()
            .method(grant.method.as_str())
            .uri(&grant.url);
        for (name, value) in &grant.headers {
            put = put.header(name, value);
        }
        let put = put.body(Full::new(body.clone())).map_err(|e| {
            transport(
                format!("the broker granted an unusable request: {e}"),
                false,
            )
        })?;
        let (status, _, answer) = exchange(client, put, deadline)
            .await
            .map_err(|e| transport(format!("PUT to the granted URL: {e}"), false))?;
        let delivered = |delivered| BrokerDelivery {
            delivered,
            key: grant.key.clone(),
        };
        if status.is_success() {
            return Ok(delivered(Delivered::Stored));
        }
        // With a key that ends in the body's hash (any broker that names
        // its key), the object there can only be this batch.
        if status == StatusCode::PRECONDITION_FAILED {
            return Ok(delivered(Delivered::AlreadyThere));
        }
        let text = String::from_utf8_lossy(&answer);
        let code = xml_tag(&text, "Code").map(|c| crate::untrusted(&c, 64));
        let message = crate::untrusted(
            &xml_tag(&text, "Message").unwrap_or_default(),
            crate::MAX_UNTRUSTED_CHARS,
        );
        let expired =
            status == StatusCode::FORBIDDEN && message.to_ascii_lowercase().contains("expired");
        if expired && !asked_again {
            asked_again = true;
            continue;
        }
        return Err(transport(
            format!(
                "the store answered HTTP {} {} to the granted PUT: {message}{}",
                status.as_u16(),
                code.as_deref().unwrap_or("(no error code)"),
                if expired {
                    " (twice: check this machine's clock)"
                } else {
                    ""
                }
            ),
            !expired && crate::put::is_permanent(Some(status.as_u16()), code.as_deref()),
        ));
    }
}

/// What the daemon requires of a grant before it sends a batch anywhere:
/// a `PUT` over HTTPS (plain HTTP only to this machine, for tests and
/// local stores), that cannot overwrite (`If-None-Match: *`) and that
/// carries exactly this body (its length and SHA-256). A broker that is
/// misconfigured or compromised cannot aim the batch elsewhere in clear
/// text or make it replace an object.
fn check_grant(grant: &Grant, request: &UploadRequest, len: usize) -> Result<(), String> {
    if !grant.method.eq_ignore_ascii_case("PUT") {
        return Err(format!("method {:?}, not PUT", grant.method));
    }
    let uri: hyper::Uri = grant
        .url
        .parse()
        .map_err(|e| format!("URL {:?}: {e}", grant.url))?;
    let loopback = uri.host().is_some_and(crate::s3::is_loopback_host);
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        other => return Err(format!("URL scheme {other:?}: only https is accepted")),
    }
    let header = |name: &str| {
        grant
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(key) = &grant.key {
        check_granted_key(key, &uri, request)?;
    }
    if header("if-none-match") != Some("*") {
        return Err("no `If-None-Match: *`: the PUT could overwrite an object".into());
    }
    let ours = parse_hex_sha256(&request.sha256)
        .map(|sha| base64_encode(&sha))
        .ok_or("the request's checksum is not hex")?;
    if header("x-amz-checksum-sha256") != Some(ours.as_str()) {
        return Err("the PUT does not carry this batch's SHA-256".into());
    }
    if let Some(n) = header("content-length") {
        if n.parse::<usize>().ok() != Some(len) {
            return Err(format!(
                "content-length {} is not the batch's {len} bytes",
                crate::untrusted(n, 40)
            ));
        }
    }
    Ok(())
}

/// Longest key a grant may name (S3's own limit).
const MAX_GRANTED_KEY: usize = 1024;

/// A grant's `key`, which the receipt, `status` and `flush` show: at most
/// [`MAX_GRANTED_KEY`] bytes of printable ASCII, this batch's parts and
/// then a hex prefix of at least [`crate::key::DIGEST_CHARS`] digits of
/// this body's SHA-256 (any length up to all 64, so a later broker may
/// take more without every deployed daemon refusing its grants), under a
/// prefix ending in `/` or none; and the key the URL's path ends with, so
/// it names the object the PUT creates.
fn check_granted_key(key: &str, url: &hyper::Uri, request: &UploadRequest) -> Result<(), String> {
    if key.len() > MAX_GRANTED_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "key {:?} is not at most {MAX_GRANTED_KEY} bytes of printable ASCII",
            crate::untrusted(key, 120)
        ));
    }
    let stem = request.parts().render("");
    let stem = stem.strip_suffix(".ndjson.zst").unwrap_or(&stem);
    let ours = || {
        let (before, digest) = key.strip_suffix(".ndjson.zst")?.rsplit_once('-')?;
        let prefix = before.strip_suffix(stem)?;
        let digest_ok = (crate::key::DIGEST_CHARS..=64).contains(&digest.len())
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && request.sha256.starts_with(digest);
        (digest_ok && (prefix.is_empty() || prefix.ends_with('/'))).then_some(())
    };
    if ours().is_none() {
        return Err(format!(
            "key {key:?} is not this batch's ({stem}-<its SHA-256's first {} or more hex digits>.ndjson.zst under a prefix)",
            crate::key::DIGEST_CHARS
        ));
    }
    let path = percent_decoded(url.path());
    if !path.ends_with(&format!("/{key}")) {
        return Err(format!(
            "key {key:?} is not the object the URL writes ({:?})",
            crate::untrusted(&path, 300)
        ));
    }
    Ok(())
}

/// `s` with `%XX` escapes decoded (bytes that do not form one are kept;
/// what is not UTF-8 after decoding is replaced). Also the broker's, for
/// its query strings.
pub fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A SHA-256 given as 64 lowercase hex digits, as bytes.
pub fn parse_hex_sha256(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Standard, padded base64 (the form of `x-amz-checksum-sha256`).
pub fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Send `req` and read the answer (at most [`MAX_RESPONSE_BYTES`]) before
/// `deadline`.
async fn exchange(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    deadline: Instant,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), String> {
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| crate::error_line(&e))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, work)
        .await
        .map_err(|_| "timed out (if the network is slow, raise the upload timeout: TELEMETRY_S3_TIMEOUT, `timeout` in the config's [s3] table)".to_string())?
}

/// Map a broker's non-200 answer.
fn broker_error(
    broker_url: &str,
    request: &UploadRequest,
    status: StatusCode,
    headers: &hyper::HeaderMap,
    answer: &[u8],
) -> UploadError {
    // The broker is the vendor's: what it says is shown to the user, and
    // goes into the log, only made safe (see `untrusted`).
    let detail = serde_json::from_slice::<ErrorBody>(answer)
        .map(|b| ErrorDetail {
            field: b.error.field.map(|f| crate::untrusted(&f, 64)),
            message: crate::untrusted(&b.error.message, crate::MAX_UNTRUSTED_CHARS),
        })
        .unwrap_or_else(|_| ErrorDetail {
            field: None,
            message: format!(
                "HTTP {status} with no JSON error body: {}",
                // Cut first: an answer may be large (a load balancer's
                // HTML page), and only its start is shown.
                crate::untrusted(
                    &String::from_utf8_lossy(&answer[..answer.len().min(1024)]),
                    200
                )
            ),
        });
    let destination = broker_url.to_string();
    match status.as_u16() {
        429 | 503 => UploadError::Throttled {
            destination,
            retry_after: retry_after(headers),
            message: detail.message,
        },
        400 | 413 => UploadError::Rejected {
            destination,
            status: status.as_u16(),
            field: detail.field,
            message: detail.message,
        },
        // Every build in this batch retired: this batch is refused for
        // good, not the product (the machine may since run a live build).
        410 if detail.field.as_deref() == Some("builds") => UploadError::Rejected {
            destination,
            status: 410,
            field: detail.field,
            message: detail.message,
        },
        410 => UploadError::Retired {
            destination,
            product: request.product.clone(),
            message: detail.message,
        },
        s => UploadError::S3 {
            bucket: format!("(via broker {broker_url})"),
            key: format!(
                "{}/{}/{}-{}-{}",
                request.product, request.day, request.machine8, request.first_seq, request.last_seq
            ),
            message: format!("the broker answered HTTP {s}: {}", detail.message),
            // 5xx will pass; another 4xx (404: a wrong broker URL) will not.
            permanent: (400..500).contains(&s) && s != 408,
        },
    }
}

/// The `Retry-After` header in seconds, clamped to [`MAX_RETRY_AFTER`];
/// [`DEFAULT_RETRY_AFTER`] when absent or an HTTP date.
pub fn retry_after(headers: &hyper::HeaderMap) -> Duration {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// The text of the first `<tag>` in an S3 XML error body.
fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_named_only_when_a_broker_would_take_them() {
        let key = BatchKey {
            product: "p".repeat(64),
            date: "2026-12-03".into(),
            machine8: "0123abcd".into(),
            first: i64::MAX - 1,
            last: i64::MAX,
        };
        let req = |builds: Vec<String>| UploadRequest::new(&key, b"body").with_builds(builds);
        let few = vec!["1.4.2".to_string(), "1.5.0".to_string()];
        assert_eq!(req(few.clone()).builds, few);
        let many: Vec<String> = (0..=MAX_BUILDS).map(|i| format!("1.{i}")).collect();
        assert!(req(many).builds.is_empty(), "over {MAX_BUILDS} builds");
        let long = vec!["9".repeat(MAX_BUILD_BYTES + 1)];
        assert!(
            req(long).builds.is_empty(),
            "a build over {MAX_BUILD_BYTES} bytes"
        );
        let wide: Vec<String> = (0..40).map(|i| format!("{i:0>60}")).collect();
        assert!(
            req(wide).builds.is_empty(),
            "over {MAX_BUILDS_JSON_BYTES} bytes of builds"
        );
        // The most that is named still leaves the request under the
        // broker's cap, whatever the other fields hold.
        let most: Vec<String> = (0..MAX_BUILDS_JSON_BYTES / (MAX_BUILD_BYTES + 3))
            .map(|i| format!("{i:0>64}"))
            .collect();
        let mut r = req(most.clone());
        assert_eq!(r.builds, most);
        r.bytes = u64::MAX;
        assert!(serde_json::to_vec(&r).unwrap().len() <= MAX_REQUEST_BYTES);
    }

    /// A batch key as the daemon makes them.
    fn sample_key() -> BatchKey {
        BatchKey {
            product: "cfdev".into(),
            date: "2026-11-27".into(),
            machine8: "0123abcd".into(),
            first: 5,
            last: 9,
        }
    }

    #[test]
    fn request_from_key_and_body() {
        let key = sample_key();
        let r = UploadRequest::new(&key, b"abc");
        assert_eq!(r.bytes, 3);
        assert_eq!(
            r.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["first_seq"], 5);
        assert!(json.get("builds").is_none(), "empty builds are not sent");
    }

    #[test]
    fn a_brokers_words_reach_the_user_without_control_characters() {
        let key = sample_key();
        let r = UploadRequest::new(&key, b"abc");
        let h = hyper::HeaderMap::new();
        let json = br#"{"error":{"field":"day","message":"bad day\u001b[2J\nlast error:   none"}}"#;
        let raw = b"<html>\x1b[2J\nconsent: other off</html>";
        for (status, body) in [(400u16, &json[..]), (502, &raw[..])] {
            let status = StatusCode::from_u16(status).unwrap();
            let shown = broker_error("https://b.example", &r, status, &h, body).to_string();
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(shown.contains("\\u{1b}[2J"), "{shown:?}");
        }
    }

    #[test]
    fn retry_after_is_clamped_and_defaulted() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h), DEFAULT_RETRY_AFTER);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        h.insert("retry-after", "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), MAX_RETRY_AFTER);
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn a_granted_key_must_be_this_batchs_and_the_urls() {
        let key = sample_key();
        let body = b"the batch";
        let req = UploadRequest::new(&key, body);
        let digest = &req.sha256[..16];
        let good = format!("raw/v1/product=cfdev/dt=2026-11-27/0123abcd-5-9-{digest}.ndjson.zst");
        let url = |k: &str| -> hyper::Uri {
            let k = k
                .replace('=', "%3D")
                .replace(' ', "%20")
                .replace('\x1b', "%1B")
                .replace('[', "%5B");
            format!("https://s3.example/bucket/{k}?X-Amz-Signature=x")
                .parse()
                .unwrap()
        };
        let check = |k: &str, u: &hyper::Uri| check_granted_key(k, u, &req);
        check(&good, &url(&good)).unwrap();
        // No prefix, and a longer digest (a later broker's), are fine too.
        let bare = good.trim_start_matches("raw/").to_string();
        check(&bare, &url(&bare)).unwrap();
        let longer = good.replace(digest, &req.sha256[..40]);
        check(&longer, &url(&longer)).unwrap();
        let bad: Vec<(String, &str)> = vec![
            (
                good.replace(digest, "0000000000000000"),
                "another body's digest",
            ),
            (good.replace(digest, &digest[..15]), "a digest too short"),
            (good.replace("-5-9-", "-5-10-"), "other parts"),
            (good.replace("raw/v1", "rawv1"), "a prefix without /"),
            (good.replace("raw/", "raw\x1b[2J/"), "a control character"),
            (good.replace("raw/", "r a w/"), "a space"),
            (format!("{}/{good}", "p".repeat(1100)), "over 1024 bytes"),
        ];
        // Each refused on its own (the URL writes that very key).
        for (k, why) in &bad {
            assert!(check(k, &url(k)).is_err(), "{why}: {k}");
        }
        // The key must be the one the URL writes.
        let other = good.replace("raw/", "elsewhere/");
        let e = check(&good, &url(&other)).unwrap_err();
        assert!(e.contains("not the object the URL writes"), "{e}");
    }

    #[test]
    fn xml_error_fields() {
        let x = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(xml_tag(x, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_tag(x, "Message").as_deref(),
            Some("Request has expired")
        );
        assert_eq!(xml_tag(x, "Key"), None);
    }
}
