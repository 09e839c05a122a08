//! Test harness for the end-to-end tests: a real S3 server on 127.0.0.1
//! (`s3s` + `s3s-fs`, SigV4 verified), the real `telemetryd` binary on a
//! temp socket and state dir, and helpers to run the real shim and
//! `telemetryctl`.
//!
//! Nothing here sleeps to wait for state: [`wait_for`] polls with a deadline.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use telemetry_client::Client;

pub mod broker;
mod conditional;
pub mod lifecycle;
pub mod proxy;
pub mod tls;

/// Access key the test S3 server accepts.
pub const ACCESS_KEY: &str = "AKIATELEMETRYTEST";
/// Secret key the test S3 server accepts.
pub const SECRET_KEY: &str = "telemetry-test-secret-key-0123456789";
/// Bucket the tests upload to.
pub const BUCKET: &str = "telemetry-test";
/// The raw machine identity the test daemons use (must never be uploaded).
pub const RAW_IDENTITY: &str = "e2e0raw0machine0identity0123456789";

/// Directory holding the workspace's binaries (`target/<profile>`): the
/// parent of a test executable's `deps/`, or a binary's own directory.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable has a directory");
    if dir.ends_with("deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; panics with a fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found; run the tests with `cargo test --workspace` so the binaries are built",
        p.display()
    );
    p
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fault the test S3 server can be told to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    None,
    /// Answer every request with this HTTP status and S3 error code.
    Status(u16, &'static str),
    /// Accept requests and never answer.
    Hang,
    /// Close every connection at once, like a server that is down.
    Down,
    /// Hold the next request this long, then serve it normally (and clear
    /// the fault): a slow link, so a short-lived presigned URL expires on
    /// its way and the server's own expiry check refuses it.
    SlowOnce(Duration),
}

/// A real S3 HTTP server on 127.0.0.1, backed by a temp directory.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
    /// Requests that reached the server (served or faulted).
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The runtime serving it; also used to drive the SDK in tests.
    runtime: tokio::runtime::Runtime,
    _root: tempfile::TempDir,
}

/// Who may write without signing, like a bucket policy that grants
/// `s3:PutObject` on `bucket/prefix*` to everyone. Every other request
/// (reads, lists, other buckets or prefixes, other operations) still needs
/// a valid SigV4 signature.
#[derive(Debug, Clone, Default)]
pub struct S3Policy {
    /// `(bucket, key prefix)` open to unsigned `PutObject`.
    pub anonymous_put: Option<(String, String)>,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for S3Policy {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_some() {
            return Ok(());
        }
        let open = match (&self.anonymous_put, cx.s3_path()) {
            (Some((b, prefix)), s3s::path::S3Path::Object { bucket, key }) => {
                cx.s3_op().name() == "PutObject"
                    && **bucket == **b
                    && key.starts_with(prefix.as_str())
            }
            _ => false,
        };
        if open {
            Ok(())
        } else {
            Err(s3s::s3_error!(AccessDenied, "Signature is required"))
        }
    }
}

impl S3Server {
    /// Start a server with [`ACCESS_KEY`]/[`SECRET_KEY`] and create
    /// [`BUCKET`] through the real SDK.
    pub fn start() -> S3Server {
        S3Server::start_with(S3Policy::default())
    }

    /// [`S3Server::start`] with an access policy.
    pub fn start_with(policy: S3Policy) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for S3 data");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime for the S3 server");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind S3 server");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let fs = lifecycle::LifecycleFs::new(root.path()).expect("s3s-fs root");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        builder.set_access(policy);
        let service = builder.build();
        let fault = std::sync::Arc::new(std::sync::Mutex::new(Fault::None));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (f, n) = (fault.clone(), requests.clone());
        runtime.spawn(async move {
            use hyper_util::rt::{TokioExecutor, TokioIo};
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Like real S3 front ends: without it, a response's small
                // writes meet the client's delayed ACK and each request
                // waits ~40 ms.
                let _ = socket.set_nodelay(true);
                if *f.lock().unwrap() == Fault::Down {
                    drop(socket);
                    continue;
                }
                let (f, n, service) = (f.clone(), n.clone(), service.clone());
                let faulty = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let fault = {
                        let mut f = f.lock().unwrap();
                        let fault = *f;
                        if matches!(fault, Fault::SlowOnce(_)) {
                            *f = Fault::None;
                        }
                        fault
                    };
                    let service = service.clone();
                    async move {
                        match fault {
                            Fault::None | Fault::Down => {
                                hyper::service::Service::call(&service, req).await
                            }
                            Fault::Status(status, code) => {
                                let body = format!(
                                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test</Message></Error>"
                                );
                                Ok(hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/xml")
                                    .body(s3s::Body::from(body))
                                    .unwrap())
                            }
                            Fault::Hang => std::future::pending().await,
                            Fault::SlowOnce(by) => {
                                tokio::time::sleep(by).await;
                                hyper::service::Service::call(&service, req).await
                            }
                        }
                    }
                });
                let conn = http.serve_connection(TokioIo::new(socket), faulty);
                let conn = conn.into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        let server = S3Server {
            endpoint,
            fault,
            requests,
            runtime,
            _root: root,
        };
        let client = server.client();
        server
            .runtime
            .block_on(client.create_bucket().bucket(BUCKET).send())
            .expect("create test bucket");
        server
    }

    /// Run `f` on the server's runtime (for driving the SDK from a test).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Put every `(key, body)` into [`BUCKET`] with the real SDK, 16 at a
    /// time.
    pub fn put_objects(&self, objects: &[(String, Vec<u8>)]) {
        let client = self.client();
        self.runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (key, body) in objects.iter().cloned() {
                if tasks.len() >= 16 {
                    tasks.join_next().await.unwrap().expect("put task");
                }
                let client = client.clone();
                tasks.spawn(async move {
                    client
                        .put_object()
                        .bucket(BUCKET)
                        .key(&key)
                        .body(body.into())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("put task");
            }
        });
    }

    /// Inject `fault` into every request from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// An SDK client with the right credentials.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Create another bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let client = self.client();
        self.runtime
            .block_on(client.create_bucket().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    }

    /// Every object in [`BUCKET`]: key → raw (compressed) bytes.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects_in(BUCKET)
    }

    /// Every object in `bucket`: key → raw (compressed) bytes, read back
    /// through the real SDK.
    pub fn objects_in(&self, bucket: &str) -> BTreeMap<String, Vec<u8>> {
        let client = self.client();
        self.runtime.block_on(async {
            let mut out = BTreeMap::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.expect("list objects");
                for obj in page.contents() {
                    let key = obj.key().unwrap().to_string();
                    let body = client
                        .get_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .expect("get object")
                        .body
                        .collect()
                        .await
                        .expect("read object")
                        .into_bytes()
                        .to_vec();
                    out.insert(key, body);
                }
            }
            out
        })
    }
}

/// Decompress every object and parse each NDJSON line.
/// Returns (key, line) pairs, in key order.
pub fn decode_objects(objects: &BTreeMap<String, Vec<u8>>) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (key, body) in objects {
        let raw = zstd::stream::decode_all(&body[..])
            .unwrap_or_else(|e| panic!("object {key} is not valid zstd: {e}"));
        let text = String::from_utf8(raw).unwrap_or_else(|_| panic!("object {key} is not UTF-8"));
        assert!(text.ends_with('\n'), "object {key} must end with a newline");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("object {key}: bad JSON line {line:?}: {e}"));
            out.push((key.clone(), v));
        }
    }
    out
}

/// Where a test daemon sends batches.
#[derive(Clone)]
pub enum Destination {
    /// The local outbox (embedded default).
    Outbox,
    /// An S3 endpoint with the given secret key.
    S3 {
        /// Endpoint URL.
        endpoint: String,
        /// Secret key to use (wrong ones test auth failures).
        secret: String,
    },
}

/// Files and settings of one test daemon; survives restarts.
pub struct DaemonEnv {
    dir: tempfile::TempDir,
    /// Socket path.
    pub socket: PathBuf,
    /// State dir.
    pub state: PathBuf,
    /// Destination.
    pub destination: Destination,
    /// Extra environment (e.g. batch limits).
    pub extra: Vec<(String, String)>,
}

impl DaemonEnv {
    /// A fresh temp dir with socket, state and an empty config file.
    pub fn new(destination: Destination) -> DaemonEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        std::fs::write(dir.path().join("machine-id"), RAW_IDENTITY).unwrap();
        // The tests' user has opted in to cfdev; consent tests change this.
        std::fs::write(dir.path().join("consent"), "cfdev on\n").unwrap();
        DaemonEnv {
            socket: dir.path().join("run/telemetryd.sock"),
            state: dir.path().join("state"),
            dir,
            destination,
            extra: Vec::new(),
        }
    }

    /// The temp dir everything lives in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Where the Rust client library finds this daemon and its consent
    /// files (no autostart: the tests start daemons themselves).
    pub fn endpoint(&self) -> telemetry_client::Endpoint {
        telemetry_client::Endpoint {
            socket: self.socket.clone(),
            consent: telemetry_client::consent::ConsentPaths {
                user: self.root().join("consent"),
                system: self.root().join("system-consent"),
            },
            state_dir: self.state.clone(),
            autostart: false,
        }
    }

    /// The spool shims in this environment write for this daemon's socket.
    pub fn spool_file(&self) -> PathBuf {
        telemetry_proto::paths::spool_file_for(&self.state, &self.socket)
    }

    /// Environment for the daemon and its clients: everything points into
    /// the temp dir, and nothing of the developer's own setup leaks in.
    pub fn envs(&self) -> Vec<(String, String)> {
        let root = self.dir.path();
        let mut env = vec![
            ("HOME".into(), root.display().to_string()),
            (
                "XDG_RUNTIME_DIR".into(),
                root.join("xdg-run").display().to_string(),
            ),
            (
                "TELEMETRY_CONFIG".into(),
                root.join("config.toml").display().to_string(),
            ),
            ("TELEMETRY_SOCKET".into(), self.socket.display().to_string()),
            (
                "TELEMETRY_STATE_DIR".into(),
                self.state.display().to_string(),
            ),
            (
                "TELEMETRY_MACHINE_ID_FILE".into(),
                root.join("machine-id").display().to_string(),
            ),
            (
                "TELEMETRY_CONSENT_FILE".into(),
                root.join("consent").display().to_string(),
            ),
            (
                "TELEMETRY_SYSTEM_CONSENT_FILE".into(),
                root.join("system-consent").display().to_string(),
            ),
            (
                "TELEMETRY_CATALOG_DIR".into(),
                root.join("catalog").display().to_string(),
            ),
            // The system manifest directories: DIR/telemetry/products.
            (
                "XDG_DATA_DIRS".into(),
                root.join("xdg-data").display().to_string(),
            ),
            ("TELEMETRY_SYNC".into(), "normal".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("TELEMETRY_LOG".into(), "info".into()),
            // Tests that want a shim to start a daemon say so
            // (tests/tests/autostart.rs); the others count on spooling.
            ("TELEMETRY_AUTOSTART".into(), "0".into()),
        ];
        if let Destination::S3 { endpoint, secret } = &self.destination {
            env.extend([
                ("TELEMETRY_S3_BUCKET".into(), BUCKET.into()),
                ("TELEMETRY_S3_ENDPOINT".into(), endpoint.clone()),
                ("TELEMETRY_S3_REGION".into(), "us-east-1".into()),
                ("TELEMETRY_S3_PREFIX".into(), "e2e".into()),
                ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY".into(), secret.clone()),
            ]);
        }
        env.extend(self.extra.iter().cloned());
        env
    }

    /// A command for a workspace binary with this environment.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(bin(name));
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "DO_NOT_TRACK",
            "TELEMETRY_OPTOUT",
            // The daemon honours these; a developer's own proxy or CA
            // must not reach the tests' 127.0.0.1 servers.
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
            "TELEMETRY_CA_BUNDLE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.envs());
        cmd
    }

    /// Run the shim for product cfdev with a generous time budget (debug
    /// builds on a loaded 2-core machine), `extra_env` and `args`.
    pub fn shim(&self, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
        self.command("telemetry-emit")
            .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
            .envs(extra_env.iter().copied())
            .args(["--product", "cfdev"])
            .args(args)
            .output()
            .expect("run telemetry-emit")
    }

    /// Run a workspace binary to completion.
    pub fn run(&self, name: &str, args: &[&str]) -> Output {
        self.command(name).args(args).output().expect("run binary")
    }

    /// Start `telemetryd` with extra environment and wait until it answers.
    pub fn start_with(&self, extra: &[(&str, &str)]) -> Daemon {
        let log = self.dir.path().join("telemetryd.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = self.command("telemetryd");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn telemetryd");
        let mut d = Daemon {
            child: Some(child),
            socket: self.socket.clone(),
            log,
        };
        d.wait_ready();
        d
    }

    /// Start `telemetryd` and wait until it answers `status`.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }
}

/// A running `telemetryd` child process.
pub struct Daemon {
    child: Option<Child>,
    /// Its socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// The socket it serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        wait_for(
            "telemetryd to answer status",
            Duration::from_secs(20),
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "telemetryd exited early with {status}; log:\n{}",
                        self.log()
                    );
                }
                Client::connect(&socket)
                    .and_then(|mut c| c.status(Duration::from_secs(2)))
                    .ok()
            },
        );
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client connected to this daemon.
    /// Send `n` acknowledged cfdev `start_end` events, one per request
    /// (`duration_s` 0, 1, ...); their ids.
    pub fn emit_start_ends(&self, n: usize) -> Vec<String> {
        let mut c = self.client();
        (0..n)
            .map(|i| {
                let mut data = BTreeMap::new();
                data.insert(
                    "duration_s".to_string(),
                    telemetry_client::Value::Int(i as i64),
                );
                let ev = telemetry_client::event("cfdev", "start_end", "1.0.0", data);
                let id = ev.id.hyphenated().to_string();
                c.emit(vec![ev], Duration::from_secs(20)).expect("ack");
                id
            })
            .collect()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to telemetryd")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// SIGTERM and wait (up to 30 s) for the exit status.
    pub fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    // Shown with the failing test's output.
                    eprintln!("telemetryd exited with {status}; log:\n{}", self.log());
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "telemetryd did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up, like a crash or power cut of the
    /// process.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let mut child = self.child.take().expect("running");
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Read all of a file (helper for privacy checks).
pub fn read_all(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("open {}", path.display()))?
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// A port on 127.0.0.1 that refuses every connection for as long as this
/// lives: bound and never listening. (A port bound and then released may
/// be taken meanwhile by a server another test starts.)
pub struct RefusingPort {
    _socket: socket2::Socket,
    /// The port.
    pub port: u16,
}

impl RefusingPort {
    /// Bind one.
    pub fn new() -> RefusingPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).expect("bind 127.0.0.1:0");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound address")
            .port();
        RefusingPort {
            _socket: socket,
            port,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        RefusingPort::new()
    }
}

/// Whether the long (soak) variants of the fault tests run:
/// `TELEMETRY_SOAK` set to anything but empty or `0`.
pub fn soak() -> bool {
    std::env::var("TELEMETRY_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A command's stdout then stderr, as text (for assertions and messages).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
