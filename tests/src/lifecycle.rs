//! `s3s-fs` with the bucket lifecycle API.
//!
//! `s3s-fs` stores objects but answers the lifecycle operations with
//! `NotImplemented`. [`LifecycleFs`] delegates every operation `s3s-fs`
//! implements and keeps each bucket's lifecycle configuration in memory, so
//! `telemetry-report retention --apply/--check` is tested with the real SDK
//! over real HTTP (SigV4 verified, XML parsed by `s3s`). A put is checked
//! as AWS checks it: it must carry Content-MD5 or an `x-amz-checksum-*`
//! header (the SDK sends a flexible checksum, so `retention --apply` needs
//! no Content-MD5 of its own), rule IDs must be unique and at most 255
//! characters, and every day count positive. Nothing expires:
//! the tests check the configuration a store is given, which is all the
//! tool controls.
//!
//! `PutObject` is checked before anything is written and honours
//! `If-None-Match: *` atomically (see `conditional`).

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// `s3s_fs::FileSystem` plus in-memory lifecycle configurations.
pub struct LifecycleFs {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    rules: Mutex<HashMap<String, LifecycleRules>>,
    /// (bucket, key) of every put in flight.
    in_flight: Mutex<HashSet<(String, String)>>,
}

impl LifecycleFs {
    /// Serve `root` (the `s3s-fs` directory: one folder per bucket).
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<LifecycleFs> {
        let root = root.into();
        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs at {}: {e:?}", root.display())))?;
        Ok(LifecycleFs {
            fs,
            root,
            rules: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// The `s3s-fs` directory.
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The `s3s-fs` underneath.
    pub(crate) fn inner(&self) -> &s3s_fs::FileSystem {
        &self.fs
    }

    /// Keys with a put in flight.
    pub(crate) fn in_flight(&self) -> &Mutex<HashSet<(String, String)>> {
        &self.in_flight
    }

    fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }
}

/// Forward operations to `s3s-fs` unchanged. Written in the form
/// `async_trait` expands to, because the attribute sees this macro's call,
/// not the methods it makes.
macro_rules! delegate {
    ($($op:ident: $input:ty => $output:ty;)*) => {
        $(
            fn $op<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$input>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { self.fs.$op(req).await })
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for LifecycleFs {
    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        get_object: GetObjectInput => GetObjectOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.checked_put(req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        // AWS refuses this operation without an integrity header
        // (Content-MD5, or an x-amz-checksum-* value of a flexible
        // checksum); a client that sends neither works here but not there.
        let has_checksum = req.headers.keys().any(|name| {
            let name = name.as_str();
            name == "content-md5"
                || (name.starts_with("x-amz-checksum-") && name != "x-amz-checksum-algorithm")
        });
        if !has_checksum {
            return Err(s3_error!(
                InvalidRequest,
                "Missing required header for this request: Content-MD5 or x-amz-checksum-*"
            ));
        }
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let rules = input
            .lifecycle_configuration
            .map(|c| c.rules)
            .unwrap_or_default();
        // The checks AWS makes that a client could get wrong.
        if rules.is_empty() || rules.len() > 1000 {
            return Err(s3_error!(MalformedXML, "between 1 and 1000 rules"));
        }
        let mut ids = std::collections::HashSet::new();
        for r in &rules {
            let id = r.id.clone().unwrap_or_default();
            if id.len() > 255 || !ids.insert(id) {
                return Err(s3_error!(
                    InvalidArgument,
                    "rule IDs must be unique and at most 255 characters"
                ));
            }
        }
        for r in &rules {
            // AWS: "'Days' for Expiration action must be a positive integer"
            // (and likewise for the other day counts).
            let days = [
                r.expiration.as_ref().and_then(|e| e.days),
                r.noncurrent_version_expiration
                    .as_ref()
                    .and_then(|e| e.noncurrent_days),
                r.abort_incomplete_multipart_upload
                    .as_ref()
                    .and_then(|a| a.days_after_initiation),
            ];
            if days.iter().flatten().any(|d| *d <= 0) {
                return Err(s3_error!(
                    InvalidArgument,
                    "'Days' must be a positive integer"
                ));
            }
        }
        self.rules.lock().unwrap().insert(input.bucket, rules);
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        match self.rules.lock().unwrap().get(&req.input.bucket) {
            Some(rules) => Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
                rules: Some(rules.clone()),
                ..Default::default()
            })),
            None => Err(s3_error!(NoSuchLifecycleConfiguration)),
        }
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        self.rules.lock().unwrap().remove(&req.input.bucket);
        Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
    }
}
