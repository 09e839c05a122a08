//! The HTTP side: accept, route, cap, answer, shut down.
//!
//! Every request is bounded: headers must arrive within
//! [`HEADER_TIMEOUT`] (also the longest a kept-alive connection may sit
//! idle), a body within [`BODY_TIMEOUT`] and [`MAX_REQUEST_BYTES`], and an
//! answer must be taken within `send_timeout` ([`SendDeadline`]); at most
//! `max_connections` are served at once,
//! and at most `max_connections_per_address` from one client address
//! (more are closed at accept); a connection older than
//! `max_connection_age` is closed after its next answer. Refusals and
//! closed connections are logged once a minute per kind and network (see
//! `quiet`). On shutdown the listener closes, idle
//! keep-alive connections are closed, and requests in flight get
//! [`DRAIN_TIMEOUT`] to finish.
//!
//! # Client addresses
//! Logs carry only a client's network (IPv4 /24, IPv6 /48): enough to see
//! an abusive network, not enough to name an end user, whose anonymity is
//! the product's promise. The full address lives only in the rate
//! limiter's memory.

use crate::quiet::hidden_note;
use crate::stall::SendDeadline;
use crate::{upload, Broker, Limit, Refusal};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use telemetry_sink::broker::{ErrorBody, ErrorDetail, HEALTH_PATH, MAX_REQUEST_BYTES, UPLOAD_PATH};
use tokio::net::TcpListener;

/// Time for a client to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a client to send its request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time requests in flight get to finish on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// An IPv6 network (`network_prefix`, a /48 by default) may hold this many
/// times the per-address connection cap: a /48 holds 65,536 /64s, each an
/// "address" of its own, so without this one home or office network could
/// hold every connection.
pub const NETWORK_CONNECTIONS_FACTOR: usize = 4;
/// What hyper buffers of one connection's request head at most (its
/// default is about 400 KiB): a request here is a short line, a few
/// headers and 4 KiB of body, and 1024 connections each holding the
/// default would be 400 MiB.
pub const MAX_HEAD_BUFFER: usize = 16 * 1024;
/// Headers one request may carry.
pub const MAX_HEADERS: usize = 32;

/// Serve `listener` until `shutdown` completes, then drain.
pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(broker.settings.max_connections));
    let admission = Admission::new(
        broker.settings.max_connections_per_address,
        broker.settings.network_prefix,
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather
                    // than spin, and keep serving what is open.
                    tracing::warn!("accept on {:?} failed: {e}", listener.local_addr().ok());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            closed_at_cap(&broker, peer.ip(), "max_connections", || {
                format!("over {} connections", broker.settings.max_connections)
            });
            continue;
        };
        // Behind a load balancer every connection is the balancer's: the
        // per-address cap is its job there. Anyone else is capped.
        let balancer = behind_balancer(&broker.settings, peer.ip());
        let places = match admission.admit(peer.ip(), balancer) {
            Ok(places) => places,
            Err(Over::Address) => {
                closed_at_cap(&broker, peer.ip(), "per_address", || {
                    format!(
                        "over {} connections from one address",
                        broker.settings.max_connections_per_address
                    )
                });
                continue;
            }
            Err(Over::Network) => {
                closed_at_cap(&broker, peer.ip(), "per_network", || {
                    format!(
                        "over {} connections from one IPv6 /{} network",
                        admission.per_network.cap, broker.settings.network_prefix
                    )
                });
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let b = broker.clone();
        let born = Instant::now();
        let service = hyper::service::service_fn(move |req| {
            let b = b.clone();
            async move {
                let mut resp = handle(&b, req, peer).await;
                // A connection is kept alive only so long: one that sends a
                // request now and then would otherwise keep its place, and
                // enough of them every place (a daemon needs one request).
                if born.elapsed() >= b.settings.max_connection_age {
                    resp.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD_BUFFER)
            .max_headers(MAX_HEADERS)
            .serve_connection(
                hyper_util::rt::TokioIo::new(SendDeadline::new(
                    stream,
                    broker.settings.send_timeout,
                )),
                service,
            );
        let conn = graceful.watch(conn);
        let b = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if let Some(why) = stalled(&e) {
                    // The network only, as for refusals: who holds
                    // connections is what an operator needs to see.
                    let net = network(peer.ip());
                    if let Some(hidden) = b.quiet.admit(&net, "stalled", Instant::now()) {
                        tracing::warn!(
                            "closed a connection from {net}: {why}{}",
                            hidden_note(hidden)
                        );
                    }
                }
            }
            drop((slot, places));
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Log a connection closed at a cap (`why`), once a minute per cap and
/// network: a caller can open connections over a cap for free.
fn closed_at_cap(b: &Broker, peer: IpAddr, kind: &str, why: impl FnOnce() -> String) {
    let net = network(peer);
    if let Some(hidden) = b.quiet.admit(&net, kind, Instant::now()) {
        tracing::warn!("{}; closing one from {net}{}", why(), hidden_note(hidden));
    }
}

/// The [`SendDeadline`] error that ended a connection, if that is what
/// ended it.
fn stalled(e: &hyper::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return (io.kind() == std::io::ErrorKind::TimedOut).then_some(io);
        }
        source = s.source();
    }
    None
}

/// The connection caps below the broker's total: per client address, and
/// per IPv6 network ([`NETWORK_CONNECTIONS_FACTOR`] times that).
struct Admission {
    per_address: PerAddress,
    per_network: PerAddress,
    prefix: u8,
}

/// Which cap a connection met.
#[derive(Debug, PartialEq, Eq)]
enum Over {
    Address,
    Network,
}

/// A connection's places under [`Admission`], given back when dropped.
struct Places {
    _address: Option<AddressSlot>,
    _network: Option<AddressSlot>,
}

impl Admission {
    /// `cap` connections per address; `prefix`: the IPv6 networks'.
    fn new(cap: usize, prefix: u8) -> Admission {
        Admission {
            per_address: PerAddress::new(cap),
            per_network: PerAddress::new(cap.saturating_mul(NETWORK_CONNECTIONS_FACTOR)),
            prefix,
        }
    }

    /// Places for one more connection from `ip` (none needed from a load
    /// balancer), or the cap it is over.
    fn admit(&self, ip: IpAddr, balancer: bool) -> Result<Places, Over> {
        if balancer {
            return Ok(Places {
                _address: None,
                _network: None,
            });
        }
        let address = self.per_address.take(limit_key(ip)).ok_or(Over::Address)?;
        // And its IPv6 network's (IPv4 has no such network: an address is
        // what one subscriber gets). Over it, the address's place goes back.
        let network = match network_key(ip, self.prefix) {
            Some(net) => Some(self.per_network.take(net).ok_or(Over::Network)?),
            None => None,
        };
        Ok(Places {
            _address: Some(address),
            _network: network,
        })
    }
}

/// Connections open per client address ([`limit_key`]): one host must
/// not hold every connection (keep-alive connections that each send a
/// request now and then stay open for good). Holds only open connections,
/// so its size is bounded by `max_connections`.
#[derive(Clone)]
struct PerAddress {
    open: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    cap: usize,
}

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressSlot {
    table: PerAddress,
    key: IpAddr,
}

impl PerAddress {
    fn new(cap: usize) -> PerAddress {
        PerAddress {
            open: Arc::default(),
            cap,
        }
    }

    /// A place for one more connection from `key`, unless it has `cap`.
    fn take(&self, key: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

async fn handle(b: &Broker, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, HEALTH_PATH) => {
            // Asking about a product is limited, per address and IPv6
            // network at the address's upload rate: otherwise it would name
            // products at any speed. Its own allowance, not the uploads':
            // any web page can make its visitors' browsers send this GET,
            // and must not use up their uploads. A load balancer's plain
            // probe is never limited.
            if asked_product(&req).is_some() {
                let client = client_ip(b, &req, peer);
                let key = network_key(client, b.settings.network_prefix)
                    .unwrap_or_else(|| limit_key(client));
                if let Err(wait) = b.probes.check(&key, Instant::now()) {
                    return refusal(Refusal::throttled(Limit::Probe, wait));
                }
            }
            json(StatusCode::OK, &health(b, &req))
        }
        (&Method::POST, UPLOAD_PATH) => {
            let started = Instant::now();
            let client = client_ip(b, &req, peer);
            let outcome = upload_request(b, req, client).await;
            let status = match &outcome {
                Ok(_) => 200,
                Err(r) => r.status,
            };
            let micros = started.elapsed().as_micros() as u64;
            match &outcome {
                // Without the client's network: the object this grant
                // writes appears in the bucket moments later, with the
                // machine's machine8 in its key, so a grant's line carrying
                // the network (or the exact size, or the machine8) would tie
                // that pseudonym to where the machine connects from.
                Ok((req, _)) => {
                    tracing::info!(status, micros, "granted {}/{}", req.product, req.day)
                }
                // A refusal writes nothing; its network is what an operator
                // needs to see who is abusing the broker.
                Err(r) => {
                    let net = network(client);
                    // Each one, for whoever debugs a client (off by default).
                    tracing::debug!(status, client = %net, micros, "answered a refusal");
                    if let Some(hidden) = b.quiet.admit(&net, &status.to_string(), Instant::now()) {
                        tracing::info!(
                            status,
                            client = %net,
                            micros,
                            "refused: {}{}",
                            r.message,
                            hidden_note(hidden)
                        )
                    }
                }
            }
            match outcome {
                Ok((_, grant)) => json(StatusCode::OK, &grant),
                Err(r) => refusal(r),
            }
        }
        (_, HEALTH_PATH | UPLOAD_PATH) => {
            let allow = if path == UPLOAD_PATH {
                "POST"
            } else {
                "GET, HEAD"
            };
            let mut resp = refusal(Refusal {
                status: 405,
                field: None,
                message: format!("{path} takes {allow}"),
                retry_after: None,
            });
            resp.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static(allow),
            );
            resp
        }
        _ => refusal(Refusal {
            status: 404,
            field: None,
            message: format!("no such endpoint; use POST {UPLOAD_PATH} or GET {HEALTH_PATH}"),
            retry_after: None,
        }),
    }
}

async fn upload_request(
    b: &Broker,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<
    (
        telemetry_sink::broker::UploadRequest,
        telemetry_sink::broker::Grant,
    ),
    Refusal,
> {
    // Before any limit is spent: a web page can make its visitors'
    // browsers POST here cross-site without asking them, but only as
    // `text/plain` or a form; `application/json` needs a preflight this
    // broker never grants.
    // Exactly one: with two, which one counts would be up to whoever
    // parses the request (a proxy in front may pick the other).
    let mut types = req.headers().get_all(hyper::header::CONTENT_TYPE).iter();
    let content_type = match (types.next(), types.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(str::trim),
        _ => None,
    };
    if !content_type.is_some_and(|t| t.eq_ignore_ascii_case("application/json")) {
        return Err(Refusal {
            status: 415,
            ..Refusal::bad(
                "content-type",
                "send the request as application/json".into(),
            )
        });
    }
    let clock = Instant::now();
    b.per_address
        .check(&limit_key(client), clock)
        .map_err(|wait| Refusal::throttled(Limit::Address, wait))?;
    // After the address's own limit, so one address over its limit does
    // not also use up its neighbours' allowance.
    let prefix = b.settings.network_prefix;
    if let Some(network) = network_key(client, prefix) {
        if let Err(wait) = b.per_network.check(&network, clock) {
            // Refused for its network's use, not its own: the address keeps
            // its token, so once the network's allowance refills it is not
            // held back for the refusals it met while it was used up.
            b.per_address.give_back(&limit_key(client));
            return Err(Refusal::throttled(Limit::Network { prefix }, wait));
        }
    }
    let too_large = || {
        Refusal::too_large(
            "body",
            format!("the request is over {MAX_REQUEST_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        // 408, not 400: a stalled network, not a bad batch, which the
        // daemon retries as any transient failure.
        Err(_) => {
            return Err(Refusal {
                status: 408,
                ..Refusal::bad("body", format!("not received within {BODY_TIMEOUT:?}"))
            })
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => return Err(Refusal::bad("body", format!("cannot be read: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let parsed = upload::parse(&body)?;
    // What one caller may store, whatever machine8 it claims: the URL is
    // signed for exactly `bytes`, so the claim is what it can write. Given
    // back if the grant is refused after all.
    let bytes_key = network_key(client, prefix).unwrap_or_else(|| limit_key(client));
    let cost = parsed.bytes as f64;
    if parsed.bytes <= b.settings.max_bytes {
        // Now, not when the request started: its body may have taken
        // seconds to arrive.
        b.bytes
            .take(&bytes_key, cost, Instant::now())
            .map_err(|wait| Refusal::throttled(Limit::Bytes, wait))?;
    }
    // A 500 (the broker could not sign) gives back the machine's token in
    // `grant`, not the address's and network's: those keep a client from
    // asking without limit while the credentials are down.
    let grant = upload::grant(b, parsed.clone(), SystemTime::now(), clock)
        .await
        .inspect_err(|_| {
            if parsed.bytes <= b.settings.max_bytes {
                b.bytes.give_back_n(&bytes_key, cost);
            }
        })?;
    Ok((parsed, grant))
}

/// The `/healthz` answer. With `?product=P` it also says whether this
/// broker accepts P (`serves`: a manifest here, and not retired), so
/// `telemetryctl doctor` can tell a user whose batches would be refused.
/// Only yes or no for the name asked: the upload endpoint already answers
/// that (400 or 410), and the list of products is not given out.
/// Answered at the address's upload rate (see [`handle`]).
fn health(b: &Broker, req: &Request<Incoming>) -> serde_json::Value {
    let mut answer = serde_json::json!({"status": "ok", "products": b.products.len()});
    if let Some(product) = asked_product(req) {
        let serves = b.products.contains(&product) && !b.settings.retired.contains(&product);
        answer["serves"] = serde_json::Value::Bool(serves);
    }
    answer
}

/// The product a `/healthz?product=P` asks about.
fn asked_product(req: &Request<Incoming>) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("product="))
            .map(telemetry_sink::broker::percent_decoded)
    })
}

/// Whether `peer` is a load balancer whose client-address header is
/// believed: one is configured and `peer` is in `trusted_proxies`.
fn behind_balancer(s: &crate::Settings, peer: IpAddr) -> bool {
    s.client_ip_header.is_some() && s.trusted_proxies.iter().any(|c| c.contains(peer))
}

/// The client's address: the trusted header's entry `client_ip_hops` from
/// its end (its lines taken as one list) if one is configured (a load
/// balancer appends the address it saw; some append their own too), else
/// the peer.
///
/// A request without the header did not come through the load balancer, so
/// its peer is the client. The entry is read from the header's raw bytes:
/// earlier entries are anyone's to write and need not be text, and must
/// not make the load balancer's entry unreadable. One that holds no
/// address (`unknown`, an obfuscated `_name`, a unix socket) is the load
/// balancer's own doing: such requests are counted as the load balancer,
/// all together, and the log says so (once a minute) naming the header.
fn client_ip(b: &Broker, req: &Request<Incoming>, peer: SocketAddr) -> IpAddr {
    let Some(name) = &b.settings.client_ip_header else {
        return peer.ip();
    };
    // From anyone but a load balancer the header is the client's own
    // claim: a fresh "address" per request would escape every limit.
    if !behind_balancer(&b.settings, peer.ip()) {
        // A balancer that connects from a public address (some clouds'
        // and CDNs' do) is not trusted by default: say so, or all its
        // clients would share its limits in silence.
        if req.headers().contains_key(name.as_str()) {
            let net = network(peer.ip());
            if let Some(hidden) = b.quiet.admit(&net, "untrusted_header", Instant::now()) {
                tracing::warn!(
                    "a {name} header came from {net}, which is not in --trusted-proxies / TELEMETRY_BROKER_TRUSTED_PROXIES: it is ignored and the peer counts as the client; if a load balancer connects from there, add its range{}",
                    hidden_note(hidden)
                );
            }
        }
        return peer.ip();
    }
    // Every line of the header, in order, as one list (RFC 9110 5.3): a
    // balancer may add a line of its own rather than append to the last.
    let lines: Vec<&[u8]> = req
        .headers()
        .get_all(name.as_str())
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if lines.is_empty() {
        return peer.ip();
    }
    let value = lines.join(&b","[..]);
    let hops = b.settings.client_ip_hops;
    address_from_end(&value, hops).unwrap_or_else(|| {
        let net = network(peer.ip());
        if let Some(hidden) = b.quiet.admit(&net, "no_client_address", Instant::now()) {
            tracing::warn!(
                "entry {hops} from the end of the {name} header from {net} holds no address (or the header has fewer entries); such requests share the load balancer's own limits (check what it writes there, and --client-ip-hops){}",
                hidden_note(hidden)
            );
        }
        peer.ip()
    })
}

/// The address in the entry `n` from the end (1: the last) of a
/// client-address header's raw bytes; see [`last_address`].
fn address_from_end(value: &[u8], n: usize) -> Option<IpAddr> {
    let entry = value.rsplit(|&c| c == b',').nth(n.checked_sub(1)?)?;
    last_address(entry)
}

/// The address in the last comma-separated entry of a client-address
/// header's raw bytes: bare, with a port (`203.0.113.9:5678`,
/// `[2001:db8::1]:443`), or as RFC 7239's `Forwarded` writes it
/// (`for=192.0.2.60;proto=https`, `for="[2001:db8::17]:4711"`).
fn last_address(value: &[u8]) -> Option<IpAddr> {
    let last = value.rsplit(|&c| c == b',').next()?;
    let entry = std::str::from_utf8(last).ok()?.trim();
    let entry = if entry.contains('=') {
        let value = entry.split(';').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then_some(value.trim())
        })?;
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
    } else {
        entry
    };
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// What the per-address limit counts: an IPv4 address, or an IPv6 /64
/// (one subscriber usually holds a whole /64, so counting single IPv6
/// addresses would give an abuser unlimited buckets and churn the
/// limiter's memory).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`:
    // as IPv6 its /64 is `::`, one bucket for every IPv4 client there is.
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(v6_network(v6, 64)),
    }
}

/// The network of `prefix` bits (1 to 64) that `v6` is in.
fn v6_network(v6: std::net::Ipv6Addr, prefix: u8) -> std::net::Ipv6Addr {
    let host_bits = 128 - u32::from(prefix.clamp(1, 64));
    std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << host_bits) - 1))
}

/// What the per-network limit counts: the IPv6 network of `prefix` bits
/// (by default a /48, the usual allocation to one site, which holds
/// 65,536 /64s and so as many per-address buckets). None for IPv4: an
/// address there is already scarce, and a /24 is often shared by
/// unrelated customers of one provider.
pub fn network_key(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some(IpAddr::V6(v6_network(v6, prefix))),
    }
}

/// The network an address is in, for logs: IPv4 /24, IPv6 /48.
pub fn network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    // A browser led here by a page must not read an answer as anything
    // but the JSON it is.
    resp.headers_mut().insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    resp
}

fn refusal(r: Refusal) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error: ErrorDetail {
            field: r.field.map(str::to_string),
            message: r.message,
        },
    };
    let mut resp = json(status, &body);
    if let Some(wait) = r.retry_after {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, wait.as_secs().into());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 network holds at most 4 times the per-address cap however
    /// many /64s it spreads over; another network, and IPv4, are not
    /// held back by it; a closed connection gives its places back; a load
    /// balancer's connections take none.
    #[test]
    fn connections_are_capped_per_address_and_per_ipv6_network() {
        let admission = Admission::new(2, 48);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut held = Vec::new();
        for site in 1..=4 {
            let a = ip(&format!("2001:db8:1:{site}::1"));
            held.push(admission.admit(a, false).expect("first"));
            held.push(admission.admit(a, false).expect("second"));
            assert_eq!(admission.admit(a, false).err(), Some(Over::Address));
        }
        // Eight from one /48: a fifth /64 there is over the network's cap.
        let fifth = ip("2001:db8:1:5::1");
        assert_eq!(admission.admit(fifth, false).err(), Some(Over::Network));
        // Refused for its network, it kept no address place either.
        assert_eq!(
            admission
                .per_address
                .open
                .lock()
                .unwrap()
                .get(&limit_key(fifth)),
            None
        );
        assert!(
            admission.admit(ip("2001:db8:2::1"), false).is_ok(),
            "another /48"
        );
        let v4 = ip("203.0.113.7");
        let _v4 = [
            admission.admit(v4, false).unwrap(),
            admission.admit(v4, false).unwrap(),
        ];
        assert_eq!(admission.admit(v4, false).err(), Some(Over::Address));
        assert!(
            admission.admit(fifth, true).is_ok(),
            "a load balancer is not capped here"
        );
        held.pop();
        assert!(
            admission.admit(fifth, false).is_ok(),
            "room again once one closed"
        );
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(limit_key(v4), v4);
    }

    #[test]
    fn ipv6_networks_are_limited_per_48_and_ipv4_is_not() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:ffff:1::9".parse().unwrap();
        let c: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(network_key(a, 48), network_key(b, 48), "one /48, two /64s");
        assert_eq!(network_key(a, 48), Some("2001:db8:1::".parse().unwrap()));
        assert_ne!(network_key(a, 48), network_key(c, 48));
        assert_eq!(network_key("203.0.113.7".parse().unwrap(), 48), None);
        assert_eq!(network_key("::ffff:203.0.113.7".parse().unwrap(), 48), None);
        // A provider that gives each customer a /56.
        assert_ne!(network_key(a, 56), network_key(b, 56));
        assert_eq!(network_key(a, 56), Some("2001:db8:1::".parse().unwrap()));
        assert_eq!(network_key(a, 64), Some(limit_key(a)));
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_limited_one_by_one() {
        let a: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        let b: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_ne!(limit_key(a), limit_key(b), "not one bucket for all IPv4");
        assert_eq!(limit_key(a), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(network(b), "198.51.100.0/24");
    }

    #[test]
    fn connections_per_address_are_capped_and_given_back() {
        let table = PerAddress::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "203.0.113.7".parse().unwrap();
        let first = table.take(limit_key(a)).expect("first");
        let second = table.take(limit_key("2001:db8:1:2::9".parse().unwrap()));
        assert!(second.is_some(), "second, same /64");
        assert!(table.take(limit_key(a)).is_none(), "third from that /64");
        assert!(
            table.take(limit_key(b)).is_some(),
            "another address is served"
        );
        drop(first);
        assert!(table.take(limit_key(a)).is_some(), "a place given back");
        drop(second);
        let open = table.open.lock().unwrap();
        assert!(!open.contains_key(&b), "closed addresses are forgotten");
    }

    #[test]
    fn health_queries_are_percent_decoded() {
        use telemetry_sink::broker::percent_decoded;
        assert_eq!(percent_decoded("cfdev"), "cfdev");
        assert_eq!(percent_decoded("a%20b%26c"), "a b&c");
        assert_eq!(percent_decoded("bad%zz%4"), "bad%zz%4");
        // Two hex digits exactly (a sign is none).
        assert_eq!(percent_decoded("a%+fb"), "a%+fb");
    }

    #[test]
    fn the_client_is_the_last_entry_bare_or_with_a_port() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(last_address(b"203.0.113.9"), ip("203.0.113.9"));
        assert_eq!(last_address(b"10.0.0.1, 203.0.113.9 "), ip("203.0.113.9"));
        assert_eq!(last_address(b"203.0.113.9:5678"), ip("203.0.113.9"));
        assert_eq!(last_address(b"2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(last_address(b"[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(last_address(b"[2001:db8::1]"), ip("2001:db8::1"));
        // An earlier entry of the client's own that is not even text does
        // not hide the load balancer's.
        assert_eq!(last_address(b"\xff\xfe, 203.0.113.9"), ip("203.0.113.9"));
        // RFC 7239's `Forwarded`.
        assert_eq!(
            last_address(b"for=192.0.2.60;proto=http;by=203.0.113.43"),
            ip("192.0.2.60")
        );
        assert_eq!(
            last_address(b"For=192.0.2.43, proto=https;for=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        // Counted from the end, for balancers that append their own
        // address after the client's.
        assert_eq!(
            address_from_end(b"6.6.6.6, 203.0.113.9, 34.120.0.10", 2),
            ip("203.0.113.9")
        );
        assert_eq!(
            address_from_end(b"6.6.6.6, 203.0.113.9, 34.120.0.10", 1),
            ip("34.120.0.10")
        );
        assert_eq!(address_from_end(b"203.0.113.9", 2), None);
        assert_eq!(
            address_from_end(b"\xff, 203.0.113.9, 10.0.0.1", 2),
            ip("203.0.113.9")
        );
        for bad in [
            &b""[..],
            b"unknown",
            b"for=unknown",
            b"for=_hidden;proto=https",
            b"proto=https",
            b"203.0.113.9, \xff",
            b"1.2.3.4, ",
            b"[::1",
        ] {
            assert_eq!(last_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn networks_hide_the_host() {
        assert_eq!(network("203.0.113.77".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(
            network("2001:db8:abcd:12::1".parse().unwrap()),
            "2001:db8:abcd::/48"
        );
    }
}
