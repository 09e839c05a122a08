//! Five-year retention of the raw batches: an S3 lifecycle rule.
//!
//! The rule ships as `report/lifecycle.json` (the AWS CLI's format, usable
//! with `aws s3api put-bucket-lifecycle-configuration`) and is compiled in,
//! so the file and `telemetry-report retention --apply` cannot disagree.
//! Only its `Filter.Prefix` changes, to `PREFIX/v1/` for a bucket with a
//! key prefix, and its `ID`, which names that prefix
//! (`telemetryd-5y-expiry:PREFIX/v1/`): several products or deployments
//! can share a bucket under different prefixes, and each keeps its own rule.
//!
//! Why 1823 days: S3 makes an object eligible for expiry at the first
//! midnight UTC after `Days` have passed (at most `Days + 1`). On a
//! versioned bucket expiry only turns the object into a noncurrent version
//! behind a delete marker; that version is removed `NoncurrentDays` (1)
//! after, again rounded to the next midnight. So the data is eligible for
//! deletion at most 1823 + 1 + 1 + 1 = 1826 days after upload, and five
//! calendar years (five 365-day years plus at least one 29 February, except
//! across 2100) are never shorter than 1826 days; on an unversioned bucket
//! it goes within 1824 days. S3 removes eligible objects asynchronously,
//! usually within a day or two of eligibility, which this rule cannot
//! bound. Incomplete multipart uploads (the daemon does not make any, other
//! tools might) go after a week.
//!
//! `PutBucketLifecycleConfiguration` replaces the bucket's whole
//! configuration, so `apply` reads it first and keeps every rule with
//! another ID — including the rules of other prefixes.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
};
use serde::{Deserialize, Serialize};

/// The shipped rule (`report/lifecycle.json`).
pub const LIFECYCLE_JSON: &str = include_str!("../lifecycle.json");

/// A lifecycle configuration in the AWS CLI's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LifecycleFile {
    /// The rules.
    pub rules: Vec<Rule>,
}

/// The one rule this tool manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Rule {
    /// Rule ID: how `apply` and `check` find it among others.
    #[serde(rename = "ID")]
    pub id: String,
    /// `Enabled`.
    pub status: String,
    /// Which keys it covers.
    pub filter: Filter,
    /// When current objects expire.
    pub expiration: Expiration,
    /// When noncurrent versions go.
    pub noncurrent_version_expiration: NoncurrentExpiration,
    /// When abandoned multipart uploads go.
    pub abort_incomplete_multipart_upload: AbortMultipart,
}

/// `Filter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Filter {
    /// Key prefix, e.g. `v1/` or `telemetry/v1/`.
    pub prefix: String,
}

/// `Expiration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Expiration {
    /// Days after creation.
    pub days: i32,
}

/// `NoncurrentVersionExpiration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NoncurrentExpiration {
    /// Days after becoming noncurrent.
    pub noncurrent_days: i32,
}

/// `AbortIncompleteMultipartUpload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AbortMultipart {
    /// Days after the upload started.
    pub days_after_initiation: i32,
}

/// A lifecycle request that failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Reading the bucket's lifecycle configuration failed.
    #[error("cannot read the lifecycle configuration of s3://{bucket}: {message}")]
    Get {
        /// Bucket.
        bucket: String,
        /// The SDK's error with its causes.
        message: String,
    },
    /// Writing it failed.
    #[error("cannot set the lifecycle configuration of s3://{bucket}: {message} (the credentials need s3:PutLifecycleConfiguration)")]
    Put {
        /// Bucket.
        bucket: String,
        /// The SDK's error with its causes.
        message: String,
    },
    /// A rule could not be converted (a bug: the shipped rule is fixed).
    #[error("invalid lifecycle rule: {0}")]
    Build(String),
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The rule is on the bucket exactly as shipped.
    InPlace,
    /// No rule with our ID.
    Missing,
    /// A rule with our ID that differs (shown as JSON).
    Different(String),
}

/// Base of the rule ID; the rule's filter prefix follows the `:`.
pub const RULE_ID_BASE: &str = "telemetryd-5y-expiry";

/// S3 limits a rule ID to 255 characters.
const MAX_RULE_ID: usize = 255;

/// The rule ID for a rule whose filter prefix is `filter_prefix`: the
/// prefix itself when it fits, so a person reading the bucket's rules sees
/// what each covers; else a cut of it and a hash of the whole, so two long
/// prefixes that share their first 200 characters still differ.
pub fn rule_id(filter_prefix: &str) -> String {
    let id = format!("{RULE_ID_BASE}:{filter_prefix}");
    if id.len() <= MAX_RULE_ID {
        return id;
    }
    // FNV-1a 64: stable across versions and platforms (std's hasher is
    // not), which the ID must be for `check` to find the rule again.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in filter_prefix.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut cut = 200;
    while !filter_prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{RULE_ID_BASE}:{}~{hash:016x}", &filter_prefix[..cut])
}

/// The shipped rule for a bucket whose keys start with `prefix` (may be
/// empty).
pub fn rule_for(prefix: &str) -> Rule {
    let file: LifecycleFile =
        serde_json::from_str(LIFECYCLE_JSON).expect("report/lifecycle.json is valid (unit-tested)");
    let mut rule = file
        .rules
        .into_iter()
        .next()
        .expect("lifecycle.json has a rule");
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        rule.filter.prefix = format!("{prefix}/{}", rule.filter.prefix);
    }
    rule.id = rule_id(&rule.filter.prefix);
    rule
}

/// The JSON for `aws s3api put-bucket-lifecycle-configuration`.
pub fn to_json(rule: &Rule) -> String {
    serde_json::to_string_pretty(&LifecycleFile {
        rules: vec![rule.clone()],
    })
    .expect("rule serializes")
}

fn to_sdk(rule: &Rule) -> Result<LifecycleRule, RetentionError> {
    LifecycleRule::builder()
        .id(&rule.id)
        .status(ExpirationStatus::from(rule.status.as_str()))
        .filter(
            LifecycleRuleFilter::builder()
                .prefix(&rule.filter.prefix)
                .build(),
        )
        .expiration(
            LifecycleExpiration::builder()
                .days(rule.expiration.days)
                .build(),
        )
        .noncurrent_version_expiration(
            NoncurrentVersionExpiration::builder()
                .noncurrent_days(rule.noncurrent_version_expiration.noncurrent_days)
                .build(),
        )
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(rule.abort_incomplete_multipart_upload.days_after_initiation)
                .build(),
        )
        .build()
        .map_err(|e| RetentionError::Build(e.to_string()))
}

/// Read a rule back in the file's shape; fields it lacks come back empty or
/// 0, so a comparison with the shipped rule fails.
// The rule-level `Prefix` is deprecated but still what older tools write;
// reading it lets `check` show such a rule instead of an empty prefix.
#[allow(deprecated)]
fn from_sdk(r: &LifecycleRule) -> Rule {
    Rule {
        id: r.id().unwrap_or_default().to_string(),
        status: r.status().as_str().to_string(),
        filter: Filter {
            prefix: r
                .filter()
                .and_then(|f| f.prefix())
                .or(r.prefix())
                .unwrap_or_default()
                .to_string(),
        },
        expiration: Expiration {
            days: r.expiration().and_then(|e| e.days()).unwrap_or(0),
        },
        noncurrent_version_expiration: NoncurrentExpiration {
            noncurrent_days: r
                .noncurrent_version_expiration()
                .and_then(|e| e.noncurrent_days())
                .unwrap_or(0),
        },
        abort_incomplete_multipart_upload: AbortMultipart {
            days_after_initiation: r
                .abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation())
                .unwrap_or(0),
        },
    }
}

/// The bucket's current rules (none when it has no configuration).
async fn current_rules(
    client: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<Vec<LifecycleRule>, RetentionError> {
    match client
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => Ok(out.rules().to_vec()),
        Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Ok(Vec::new()),
        Err(e) => Err(RetentionError::Get {
            bucket: bucket.to_string(),
            message: telemetry_sink::error_line(&e),
        }),
    }
}

/// Put `rule` on `bucket`, keeping the bucket's other rules. Returns how
/// many other rules were kept.
pub async fn apply(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    rule: &Rule,
) -> Result<usize, RetentionError> {
    let mut rules: Vec<LifecycleRule> = current_rules(client, bucket)
        .await?
        .into_iter()
        .filter(|r| r.id() != Some(rule.id.as_str()))
        .collect();
    let kept = rules.len();
    rules.push(to_sdk(rule)?);
    let config = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .map_err(|e| RetentionError::Build(e.to_string()))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config)
        .send()
        .await
        .map_err(|e| RetentionError::Put {
            bucket: bucket.to_string(),
            message: telemetry_sink::error_line(&e),
        })?;
    Ok(kept)
}

/// Read the bucket's configuration back and compare our rule with `rule`.
pub async fn check(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    rule: &Rule,
) -> Result<Check, RetentionError> {
    let rules = current_rules(client, bucket).await?;
    let Some(found) = rules.iter().find(|r| r.id() == Some(rule.id.as_str())) else {
        return Ok(Check::Missing);
    };
    let found = from_sdk(found);
    if &found == rule {
        Ok(Check::InPlace)
    } else {
        Ok(Check::Different(to_json(&found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rule_parses_and_expires_within_five_years() {
        let r = rule_for("");
        assert_eq!(r.filter.prefix, "v1/");
        assert_eq!(r.status, "Enabled");
        // Current version: eligible by the first midnight after `days`
        // (days + 1); on a versioned bucket the noncurrent version then
        // goes `noncurrent_days` later, again rounded up (+ 1). Five
        // calendar years are at least 365 * 5 + 1 days.
        let worst = r.expiration.days + 1 + r.noncurrent_version_expiration.noncurrent_days + 1;
        assert!(worst <= 365 * 5 + 1, "within five years: {worst} days");
        assert!(worst >= 365 * 5, "keep data the five years promised");
        // The file says the same as rule_for("").
        let file: LifecycleFile = serde_json::from_str(LIFECYCLE_JSON).unwrap();
        assert_eq!(file.rules, vec![r.clone()]);
        assert_eq!(rule_for("/raw/cli/").filter.prefix, "raw/cli/v1/");
        assert_eq!(rule_for("raw/cli").id, "telemetryd-5y-expiry:raw/cli/v1/");
        assert_ne!(rule_for("a").id, rule_for("b").id);
        assert!(to_sdk(&r).is_ok());
        assert_eq!(from_sdk(&to_sdk(&r).unwrap()), r);
        let back: LifecycleFile = serde_json::from_str(&to_json(&r)).unwrap();
        assert_eq!(back.rules, vec![r]);
    }

    #[test]
    fn long_prefixes_get_distinct_ids_within_the_limit() {
        let a = "é".repeat(150);
        let (ra, rb) = (rule_for(&format!("{a}/x")), rule_for(&format!("{a}/y")));
        assert!(ra.id.len() <= MAX_RULE_ID && rb.id.len() <= MAX_RULE_ID);
        assert_ne!(ra.id, rb.id);
        assert!(ra.id.starts_with("telemetryd-5y-expiry:éé"));
        assert_eq!(ra.id, rule_for(&format!("{a}/x")).id, "stable");
    }
}
