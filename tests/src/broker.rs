//! The real `telemetry-broker` binary, signing for a [`S3Server`], and
//! plain HTTP helpers to talk to it and to the URLs it grants.

use crate::{bin, wait_for, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// "Today" for the broker's day window in these tests
/// (`TELEMETRY_BROKER_TODAY`), so runs are reproducible.
pub const TODAY: &str = "2026-11-27";

/// A running `telemetry-broker`.
pub struct Broker {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Start a broker for `s3` accepting product `cfdev` (the shipped
    /// manifest) plus a broken manifest `broken.toml`, with `extra`
    /// environment on top.
    pub fn start(s3: &S3Server, extra: &[(&str, &str)]) -> Broker {
        Broker::start_with_fd_limit(s3, extra, None)
    }

    /// [`Broker::start`], with the open-file limit (soft and hard) set to
    /// `nofile` when given, as a service manager's `LimitNOFILE` would.
    pub fn start_with_fd_limit(
        s3: &S3Server,
        extra: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir for the broker");
        let manifests = dir.path().join("products");
        std::fs::create_dir(&manifests).expect("manifest dir");
        let cfdev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog/cfdev.toml");
        std::fs::copy(&cfdev, manifests.join("cfdev.toml")).expect("copy cfdev.toml");
        std::fs::write(
            manifests.join("broken.toml"),
            "product = \"broken\"\n[events.x\n",
        )
        .expect("write broken.toml");
        let log = dir.path().join("broker.log");
        let stderr = std::fs::File::create(&log).expect("broker log");
        let mut cmd = Command::new(bin("telemetry-broker"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("TELEMETRY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("TELEMETRY_BROKER_LISTEN", "127.0.0.1:0")
            .env("TELEMETRY_BROKER_MANIFESTS", &manifests)
            .env("TELEMETRY_BROKER_TODAY", TODAY)
            .env("TELEMETRY_S3_BUCKET", BUCKET)
            .env("TELEMETRY_S3_ENDPOINT", &s3.endpoint)
            .env("TELEMETRY_S3_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            // Keep the chain to the environment: no profile files of the
            // machine running the tests, no instance metadata.
            .env("AWS_CONFIG_FILE", dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: runs in the child between fork and exec, and calls
            // only setrlimit(2), which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().expect("start telemetry-broker");
        let url = wait_for("the broker to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "telemetry-broker exited early with {status}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&log).ok()?;
            let rest = text.split("listening on ").nth(1)?;
            let addr = rest.split(';').next()?;
            Some(format!("http://{addr}"))
        });
        Broker {
            child: Some(child),
            url,
            log,
            _dir: dir,
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The broker's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (up to 20 s) for the exit status.
    pub fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on a child we started; no memory is involved.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        // On failure the child stays in `self` and Drop reaps it.
        anyhow::ensure!(rc == 0, "kill({pid}, SIGTERM) failed");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("telemetry-broker ignored SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one request with the same client the daemon uses.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    use http_body_util::BodyExt;
    let client = telemetry_sink::net::http_client(&Default::default())?;
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req)).await??;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
