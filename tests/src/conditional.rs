//! The test S3 server's `PutObject`, with the semantics the daemon relies
//! on and `s3s-fs` lacks.
//!
//! `s3s-fs` checks `If-None-Match: *` by looking for the file before it
//! writes (two puts of one key can both pass), and compares Content-MD5 and
//! `x-amz-checksum-*` only after the body is in place (a wrong body is
//! stored, then refused). [`LifecycleFs`] puts instead:
//! 1. read the whole body and check Content-MD5 and every checksum the
//!    request carries (header or trailer): a mismatch is `BadDigest` and
//!    nothing is written;
//! 2. reserve the key: a second put of a key whose put is still in flight
//!    gets `409 ConditionalRequestConflict`, as S3 answers concurrent
//!    conditional writes;
//! 3. with `If-None-Match: *`, an existing object is `412
//!    PreconditionFailed`;
//! 4. only then hand the checked bytes to `s3s-fs`, which writes a temp
//!    file and renames it into place.
//!
//! Every put goes through the one server process, so the reservation makes
//! 2-4 atomic with respect to every other put.

use crate::lifecycle::LifecycleFs;
use futures::StreamExt;
use s3s::crypto::Checksum as _;
use s3s::dto::{PutObjectInput, PutObjectOutput, StreamingBlob};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

/// Keys with a put in flight, released on drop.
pub(crate) struct Reservation<'a> {
    fs: &'a LifecycleFs,
    slot: (String, String),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.fs.in_flight().lock().unwrap().remove(&self.slot);
    }
}

/// Standard base64, for comparing with Content-MD5.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Check every integrity value the request carries against `body`.
fn verify(input: &PutObjectInput, trailers: &hyper::HeaderMap, body: &[u8]) -> S3Result<()> {
    if let Some(md5) = &input.content_md5 {
        if *md5 != base64(&s3s::crypto::Md5::checksum(body)) {
            return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
        }
    }
    let given = |header: Option<&String>, trailer: &str| {
        header
            .cloned()
            .or_else(|| trailers.get(trailer)?.to_str().ok().map(str::to_string))
    };
    let expected = [
        given(input.checksum_crc32.as_ref(), "x-amz-checksum-crc32"),
        given(input.checksum_crc32c.as_ref(), "x-amz-checksum-crc32c"),
        given(input.checksum_sha1.as_ref(), "x-amz-checksum-sha1"),
        given(input.checksum_sha256.as_ref(), "x-amz-checksum-sha256"),
        given(
            input.checksum_crc64nvme.as_ref(),
            "x-amz-checksum-crc64nvme",
        ),
    ];
    let mut hasher = s3s::checksum::ChecksumHasher {
        crc32: expected[0].as_ref().map(|_| Default::default()),
        crc32c: expected[1].as_ref().map(|_| Default::default()),
        sha1: expected[2].as_ref().map(|_| Default::default()),
        sha256: expected[3].as_ref().map(|_| Default::default()),
        crc64nvme: expected[4].as_ref().map(|_| Default::default()),
    };
    hasher.update(body);
    let got = hasher.finalize();
    let got = [
        got.checksum_crc32,
        got.checksum_crc32c,
        got.checksum_sha1,
        got.checksum_sha256,
        got.checksum_crc64nvme,
    ];
    for (name, (want, got)) in ["crc32", "crc32c", "sha1", "sha256", "crc64nvme"]
        .iter()
        .zip(expected.iter().zip(got.iter()))
    {
        if want.is_some() && want != got {
            return Err(s3_error!(
                BadDigest,
                "x-amz-checksum-{name} does not match the body"
            ));
        }
    }
    Ok(())
}

impl LifecycleFs {
    /// `PutObject` as described in the module docs.
    pub(crate) async fn checked_put(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let Some(mut stream) = req.input.body.take() else {
            return Err(s3_error!(IncompleteBody));
        };
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "reading the body: {e}"))?;
            body.extend_from_slice(&chunk);
        }
        // Trailing checksums are known once the body is read; read, not
        // taken, so s3s-fs sees them too.
        let trailers = req
            .trailing_headers
            .as_ref()
            .and_then(|t| t.read(|h| h.clone()))
            .unwrap_or_default();
        verify(&req.input, &trailers, &body)?;
        let _slot = self.reserve(&req.input.bucket, &req.input.key)?;
        let exists = self
            .root()
            .join(&req.input.bucket)
            .join(&req.input.key)
            .exists();
        if exists && req.input.if_none_match.as_ref().is_some_and(|c| c.is_any()) {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        req.input.body = Some(StreamingBlob::from(s3s::Body::from(bytes::Bytes::from(
            body,
        ))));
        self.inner().put_object(req).await
    }

    fn reserve(&self, bucket: &str, key: &str) -> S3Result<Reservation<'_>> {
        let slot = (bucket.to_string(), key.to_string());
        if !self.in_flight().lock().unwrap().insert(slot.clone()) {
            return Err(s3_error!(
                ConditionalRequestConflict,
                "A conflicting operation on this object is in progress; retry"
            ));
        }
        Ok(Reservation { fs: self, slot })
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
