//! Networks as users have them: an HTTP(S) proxy from the environment and
//! an extra CA bundle for corporate TLS inspection, applied the same way to
//! the S3 client ([`crate::s3::client`]) and to the plain HTTPS client the
//! broker client uses ([`http_client`]).
//!
//! # Proxy
//! Read once, when [`NetOptions::from_env`] runs:
//! - `https_proxy`, then `HTTPS_PROXY`: the proxy for `https://` URLs,
//!   reached with `CONNECT host:port` (TLS stays end to end).
//! - `http_proxy`, then `HTTP_PROXY`: the proxy for `http://` URLs, sent
//!   requests in absolute form.
//! - `no_proxy`, then `NO_PROXY`: comma-separated hosts that bypass the
//!   proxy, with curl's rules: `example.com` and `.example.com` both match
//!   that domain and its subdomains, IP addresses and CIDR blocks
//!   (`10.0.0.0/8`) match addresses, and `*` matches everything.
//!   `localhost` and `127.0.0.1` are *not* exempt unless listed (curl's
//!   rule too), so a proxy that must not see local traffic needs
//!   `NO_PROXY=localhost,127.0.0.1`.
//!
//! Lower case first, as curl does; an empty value is unset. A proxy URL
//! that does not parse is an error naming the variable, not a silent
//! direct connection.
//!
//! # CA bundle
//! A PEM file of extra trusted certificates (`TELEMETRY_CA_BUNDLE`). They
//! are added to the platform's roots, not used instead of them: the same
//! daemon may upload one product to a vendor's broker on the internet and
//! another to an S3 endpoint behind TLS inspection, and replacing the roots
//! would break the first. The file is read and every certificate checked
//! when the options are built, so a bad bundle stops the daemon at start
//! with the file's name, never a request later (the SDK would panic on a
//! certificate it cannot parse).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable naming the CA bundle (also `--ca-bundle` and the
/// config key `ca_bundle` in the daemon).
pub const CA_BUNDLE_VAR: &str = "TELEMETRY_CA_BUNDLE";

/// Why the network options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The CA bundle could not be read.
    #[error("cannot read the CA bundle {path} (set by {origin}): {source}; give a readable PEM file of CA certificates, or unset it")]
    CaRead {
        /// The file.
        path: PathBuf,
        /// Where the path came from (a flag, a variable or a config file).
        origin: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CA bundle has no usable certificate, or one that cannot be a
    /// trust anchor.
    #[error("CA bundle {path} (set by {origin}): {reason}; it must hold PEM certificates (-----BEGIN CERTIFICATE-----), e.g. your organisation's root CA")]
    CaInvalid {
        /// The file.
        path: PathBuf,
        /// Where the path came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A proxy variable holds something that is not a proxy URL.
    #[error("environment variable {var}: invalid proxy URL {value:?}: {reason}; expected e.g. http://proxy.example.com:3128")]
    Proxy {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// Extra trusted certificates, read and checked.
#[derive(Clone)]
pub struct CaBundle {
    /// The file they came from (for messages).
    pub path: PathBuf,
    /// The PEM text of the bundle's certificates.
    pem: Vec<u8>,
    /// The same certificates, parsed.
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaBundle {
    /// Read `path` and check every certificate in it. `origin` says where
    /// the path came from (`environment variable TELEMETRY_CA_BUNDLE`,
    /// `flag --ca-bundle`, `config file F`), for the error.
    pub fn load(path: &Path, origin: &str) -> Result<CaBundle, NetError> {
        let pem = std::fs::read(path).map_err(|source| NetError::CaRead {
            path: path.to_path_buf(),
            origin: origin.to_string(),
            source,
        })?;
        Self::parse(path, origin, pem)
    }

    fn parse(path: &Path, origin: &str, pem: Vec<u8>) -> Result<CaBundle, NetError> {
        use rustls_pki_types::pem::PemObject;
        let invalid = |reason: String| NetError::CaInvalid {
            path: path.to_path_buf(),
            origin: origin.to_string(),
            reason,
        };
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in it".into()));
        }
        for (i, cert) in certs.iter().enumerate() {
            rustls::RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| invalid(format!("certificate {} of {}: {e}", i + 1, certs.len())))?;
        }
        Ok(CaBundle {
            path: path.to_path_buf(),
            pem,
            certs,
        })
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Never true: a bundle without certificates is refused when loaded.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// The proxy settings read from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// Proxy for `https://` URLs (`https_proxy` / `HTTPS_PROXY`).
    pub https: Option<String>,
    /// Proxy for `http://` URLs (`http_proxy` / `HTTP_PROXY`).
    pub http: Option<String>,
    /// Bypass list (`no_proxy` / `NO_PROXY`), curl's syntax.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Read the proxy variables through `env`, checking the URLs.
    pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> Result<ProxyEnv, NetError> {
        let get = |vars: [&'static str; 2]| -> Option<(&'static str, String)> {
            vars.into_iter().find_map(|v| {
                env(v)
                    .map(|s| s.to_string_lossy().trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|s| (v, s))
            })
        };
        let check = |found: Option<(&'static str, String)>| -> Result<Option<String>, NetError> {
            let Some((var, value)) = found else {
                return Ok(None);
            };
            let bad = |reason: &str| NetError::Proxy {
                var,
                value: value.clone(),
                reason: reason.to_string(),
            };
            // `proxy:3128` without a scheme is common in the wild; curl
            // reads it as http://, and so do we.
            let url = if value.contains("://") {
                value.clone()
            } else {
                format!("http://{value}")
            };
            let uri: http::Uri = url
                .parse()
                .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
            match uri.scheme_str() {
                Some("http") | Some("https") => {}
                _ => return Err(bad("only http:// and https:// proxies are supported")),
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err(bad("no host"));
            }
            Ok(Some(url))
        };
        Ok(ProxyEnv {
            https: check(get(["https_proxy", "HTTPS_PROXY"]))?,
            http: check(get(["http_proxy", "HTTP_PROXY"]))?,
            no_proxy: get(["no_proxy", "NO_PROXY"]).map(|(_, v)| v),
        })
    }

    /// The hyper-util matcher for these settings (curl's NO_PROXY rules).
    fn matcher(&self) -> hyper_util::client::proxy::matcher::Matcher {
        let mut b = hyper_util::client::proxy::matcher::Matcher::builder();
        if let Some(p) = &self.https {
            b = b.https(p.clone());
        }
        if let Some(p) = &self.http {
            b = b.http(p.clone());
        }
        if let Some(n) = &self.no_proxy {
            b = b.no(n.clone());
        }
        b.build()
    }

    /// The proxy `url` would go through, if any (`None`: direct).
    pub fn proxy_for(&self, url: &http::Uri) -> Option<String> {
        self.matcher().intercept(url).map(|i| i.uri().to_string())
    }
}

/// How this process reaches the network: the proxy from the environment
/// and the extra CA bundle. Built once at start ([`NetOptions::from_env`])
/// and passed to every client: [`crate::s3::client`] and [`http_client`].
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    /// Extra trusted CAs, added to the platform's roots.
    pub ca_bundle: Option<CaBundle>,
    /// Proxies from the environment.
    pub proxy: ProxyEnv,
}

impl NetOptions {
    /// The proxy variables through `env`, and the CA bundle at `ca_bundle`
    /// (with where that path came from, for errors), both checked now.
    pub fn from_env(
        env: impl Fn(&str) -> Option<OsString>,
        ca_bundle: Option<(&Path, &str)>,
    ) -> Result<NetOptions, NetError> {
        Ok(NetOptions {
            ca_bundle: ca_bundle
                .map(|(path, origin)| CaBundle::load(path, origin))
                .transpose()?,
            proxy: ProxyEnv::from_env(env)?,
        })
    }

    /// The SDK's HTTP client for requests to `endpoint` (`None`: AWS,
    /// always https): the proxy for the endpoint's scheme with the
    /// NO_PROXY rules, and the platform's roots plus the CA bundle.
    ///
    /// The SDK's default client ignores proxy variables entirely, and its
    /// `Builder` has no proxy setting, so the connector is built here with
    /// `build_with_connector_fn` (the SDK's own hook for custom
    /// connectors), passing the SDK's timeouts and sleep through.
    pub(crate) fn sdk_http_client(
        &self,
        endpoint: Option<&str>,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        use aws_smithy_http_client::proxy::ProxyConfig;
        use aws_smithy_http_client::tls;

        let plain_http = endpoint.is_some_and(|e| e.starts_with("http://"));
        // The URLs were checked in ProxyEnv::from_env, so these parse; if
        // the SDK disagrees, going direct is the safe reading.
        let proxy = match (plain_http, &self.proxy.http, &self.proxy.https) {
            (true, Some(p), _) => ProxyConfig::http(p.as_str()).ok(),
            (false, _, Some(p)) => ProxyConfig::https(p.as_str()).ok(),
            _ => None,
        }
        .map(|p| match &self.proxy.no_proxy {
            Some(n) => p.no_proxy(n),
            None => p,
        })
        .unwrap_or_else(ProxyConfig::disabled);
        let mut trust = tls::TrustStore::default();
        if let Some(ca) = &self.ca_bundle {
            trust = trust.with_pem_certificate(ca.pem.clone());
        }
        let context = tls::TlsContext::builder().with_trust_store(trust).build();
        aws_smithy_http_client::Builder::new().build_with_connector_fn(
            move |settings, components| {
                let mut b = aws_smithy_http_client::Connector::builder();
                b.set_connector_settings(settings.cloned());
                if let Some(components) = components {
                    b.set_sleep_impl(components.sleep_impl());
                }
                let b = b
                    .proxy_config(proxy.clone())
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ));
                match &context {
                    Ok(ctx) => b.tls_context(ctx.clone()).build(),
                    // Building a TlsContext cannot fail in this SDK version;
                    // the platform's roots alone are the fallback if it does.
                    Err(_) => b.build(),
                }
            },
        )
    }

    /// A rustls client configuration: the platform's roots plus the
    /// bundle, aws-lc-rs as the crypto provider (the SDK's, already built).
    fn rustls_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(errors = ?native.errors, "some platform CA certificates could not be loaded");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &self.ca_bundle {
            roots.add_parsable_certificates(ca.certs.iter().cloned());
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

pub use client::{http_client, HttpClient, HttpClientError, NetConnector};

mod client;

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn proxy_variables_lower_case_first_empty_is_unset_scheme_optional() {
        let p = ProxyEnv::from_env(env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", "plain:3128"),
            ("no_proxy", ""),
            ("NO_PROXY", "corp"),
        ]))
        .unwrap();
        assert_eq!(p.https.as_deref(), Some("http://lower:2"));
        assert_eq!(p.http.as_deref(), Some("http://plain:3128"));
        assert_eq!(p.no_proxy.as_deref(), Some("corp"));
        assert_eq!(ProxyEnv::from_env(env(&[])).unwrap(), ProxyEnv::default());
    }

    #[test]
    fn a_bad_proxy_url_names_the_variable() {
        for (var, value) in [
            ("HTTPS_PROXY", "http://bad host:1"),
            ("http_proxy", "socks5://proxy:1080"),
        ] {
            let err = ProxyEnv::from_env(env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn no_proxy_follows_curl() {
        let p = |no: &str| ProxyEnv {
            https: Some("http://proxy:3128".into()),
            http: None,
            no_proxy: Some(no.into()),
        };
        let via = Some("http://proxy:3128/".to_string());
        // Local addresses are proxied unless listed.
        assert_eq!(p("").proxy_for(&uri("https://127.0.0.1:9000/b")), via);
        assert_eq!(p("example.com").proxy_for(&uri("https://localhost/")), via);
        // Domains match themselves and subdomains, with or without a dot.
        assert_eq!(
            p("example.com").proxy_for(&uri("https://s3.example.com/")),
            None
        );
        assert_eq!(
            p(".example.com").proxy_for(&uri("https://example.com/")),
            None
        );
        assert_eq!(
            p("example.com").proxy_for(&uri("https://notexample.com/")),
            via
        );
        // Addresses and blocks; `*` is everything.
        assert_eq!(p("10.0.0.0/8").proxy_for(&uri("https://10.1.2.3/")), None);
        assert_eq!(p("127.0.0.1").proxy_for(&uri("https://127.0.0.1:1/")), None);
        assert_eq!(p("*").proxy_for(&uri("https://anything/")), None);
        // http:// URLs use HTTP_PROXY only.
        assert_eq!(p("").proxy_for(&uri("http://minio:9000/")), None);
    }

    #[test]
    fn a_ca_bundle_without_usable_certificates_is_refused_naming_file_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let origin = "environment variable TELEMETRY_CA_BUNDLE";

        let err = CaBundle::load(&path, origin).unwrap_err().to_string();
        assert!(err.contains("ca.pem") && err.contains(origin), "{err}");

        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = CaBundle::load(&path, origin).unwrap_err().to_string();
        assert!(
            err.contains("no certificate") && err.contains(origin),
            "{err}"
        );

        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, garbage).unwrap();
        let err = CaBundle::load(&path, origin).unwrap_err().to_string();
        assert!(err.contains("certificate 1 of 1"), "{err}");
    }
}
