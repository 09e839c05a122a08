//! Where batches are read from: an S3 bucket (same settings and credential
//! chain as the daemon) or a local outbox directory with the same key layout.
//!
//! Objects are listed first (keys only, so a progress line can show a
//! total), then read one at a time and decompressed as a stream: memory is
//! one network chunk, one decompression buffer and one partial line, never a
//! whole object. A line longer than [`MAX_LINE`] is an error, so a damaged
//! object cannot make the reader buffer without bound.

use crate::period::Day;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Longest NDJSON line accepted. The daemon's lines are a few hundred bytes
/// (catalogue-checked data, at most a few small values).
pub const MAX_LINE: usize = 1024 * 1024;

/// Chunk timeout for an S3 body when the source carries none (cannot
/// happen: only an S3 source opens S3 bodies); the daemon's default.
const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A failure to list or read the source. Every variant names the place.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Listing failed (bucket missing, access denied, directory unreadable).
    #[error("cannot list {location}: {message}")]
    List {
        /// `s3://bucket/prefix` or a directory.
        location: String,
        /// The cause, with the SDK's or the OS's details.
        message: String,
    },
    /// Fetching or reading an object failed.
    #[error("cannot read {location}: {message}")]
    Read {
        /// `s3://bucket/key` or a file.
        location: String,
        /// The cause.
        message: String,
    },
    /// The object is not a complete zstd stream of NDJSON lines.
    #[error("{location} is damaged: {message}; move it out of the report's source (or restore it) and run again")]
    Corrupt {
        /// `s3://bucket/key` or a file.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// Writing or deleting an object of a mirror failed (`compact`).
    #[error("cannot write {location}: {message}")]
    Write {
        /// `s3://bucket/key` or a file.
        location: String,
        /// The cause.
        message: String,
    },
    /// A line is not a valid event.
    #[error("{location} line {line}: {message}; move the object out of the report's source (or fix it) and run again")]
    Line {
        /// `s3://bucket/key` or a file.
        location: String,
        /// 1-based line number in the decompressed object.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl SourceError {
    /// What is wrong, without what to do about it: how a damaged object
    /// that `--skip-damaged` left out is listed.
    pub fn without_remedy(&self) -> String {
        match self {
            SourceError::Corrupt { location, message } => {
                format!("{location} is damaged: {message}")
            }
            SourceError::Line {
                location,
                line,
                message,
            } => format!("{location} line {line}: {message}"),
            other => other.to_string(),
        }
    }
}

/// One batch object to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The key (relative path in a directory source).
    pub key: String,
    /// Compressed size in bytes (for progress).
    pub size: u64,
}

/// A place holding batches under `[prefix/]v1/product=P/dt=YYYY-MM-DD/`.
pub enum Source {
    /// A local outbox directory.
    Dir(PathBuf),
    /// An S3 (or S3-compatible) bucket.
    S3 {
        /// The SDK client.
        client: aws_sdk_s3::Client,
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing `/` (may be empty).
        prefix: String,
        /// Longest wait for each chunk of an object's body (the daemon's
        /// `s3_timeout`). The SDK's operation timeout ends when the
        /// response headers arrive, so without this a server that stalls
        /// mid-body would hang the report forever.
        read_timeout: std::time::Duration,
    },
}

impl Source {
    /// `s3://bucket/prefix` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.display().to_string(),
            Source::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            Source::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// `s3://bucket/key` or the file of `key`, as errors name it.
    pub fn location(&self, key: &str) -> String {
        match self {
            Source::Dir(d) => d.join(key).display().to_string(),
            Source::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
        }
    }

    /// The key prefix of `product`'s objects filed on `day`.
    pub fn day_prefix(&self, product: &str, day: Day) -> String {
        format!("{}product={product}/dt={day}/", self.root())
    }

    /// Whether `self` and `other` read the same objects (or one holds the
    /// other's): a mirror must be somewhere else.
    pub fn overlaps(&self, other: &Source) -> bool {
        match (self, other) {
            (Source::Dir(a), Source::Dir(b)) => {
                let canon = |d: &PathBuf| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
                let (a, b) = (canon(a).join("v1"), canon(b).join("v1"));
                a.starts_with(&b) || b.starts_with(&a)
            }
            (Source::S3 { bucket: a, .. }, Source::S3 { bucket: b, .. }) if a == b => {
                let (ra, rb) = (self.root(), other.root());
                ra.starts_with(&rb) || rb.starts_with(&ra)
            }
            _ => false,
        }
    }

    /// Store the file at `path` as `key` (replacing it). A directory gets
    /// it under a temporary name first, which no reader lists, then
    /// renamed, so a reader never sees half of it.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), SourceError> {
        let location = self.location(key);
        let err = |message: String| SourceError::Write {
            location: location.clone(),
            message,
        };
        match self {
            Source::Dir(dir) => {
                let dest = dir.join(key);
                let parent = dest.parent().expect("a key has a directory");
                std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
                // Hidden: no reader lists dot files.
                let name = dest
                    .file_name()
                    .expect("a key names a file")
                    .to_string_lossy();
                let tmp = parent.join(format!(".{name}.partial"));
                std::fs::copy(path, &tmp).map_err(|e| err(e.to_string()))?;
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &dest))
                    .map_err(|e| err(e.to_string()))
            }
            Source::S3 { client, bucket, .. } => {
                let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type("application/zstd")
                    .body(body)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| err(telemetry_sink::error_line(&e)))
            }
        }
    }

    /// A small object's bytes (`compact`'s `_sources`), `None` if absent.
    pub async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let location = self.location(key);
        let err = |message: String| SourceError::Read {
            location: location.clone(),
            message,
        };
        match self {
            Source::Dir(dir) => match std::fs::read(dir.join(key)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(err(e.to_string())),
            },
            Source::S3 { client, bucket, .. } => {
                match client.get_object().bucket(bucket).key(key).send().await {
                    Ok(resp) => resp
                        .body
                        .collect()
                        .await
                        .map(|b| Some(b.into_bytes().to_vec()))
                        .map_err(|e| err(e.to_string())),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                    Err(e) => Err(err(telemetry_sink::error_line(&e))),
                }
            }
        }
    }

    /// Delete `key`.
    pub async fn delete(&self, key: &str) -> Result<(), SourceError> {
        let location = self.location(key);
        let err = |message: String| SourceError::Write {
            location: location.clone(),
            message,
        };
        match self {
            Source::Dir(dir) => std::fs::remove_file(dir.join(key)).map_err(|e| err(e.to_string())),
            Source::S3 { client, bucket, .. } => client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| err(telemetry_sink::error_line(&e))),
        }
    }

    fn root(&self) -> String {
        match self {
            Source::S3 { prefix, .. } if !prefix.is_empty() => format!("{prefix}/v1/"),
            _ => "v1/".to_string(),
        }
    }

    /// The products that have batches (`product=P` partitions).
    pub async fn products(&self) -> Result<Vec<String>, SourceError> {
        let root = self.root();
        let mut out = Vec::new();
        match self {
            Source::Dir(dir) => {
                let path = dir.join(&root);
                let names = read_dir_names(&path).map_err(|e| match e {
                    // The usual slip: the folder above the one holding v1/
                    // (a synced bucket with its prefix), or below it.
                    SourceError::List { location, message } if !path.is_dir() => {
                        SourceError::List {
                            location,
                            message: format!(
                                "{message}; --source must be the directory that holds v1/ (for a copy of a bucket, the folder of its prefix)"
                            ),
                        }
                    }
                    other => other,
                })?;
                for name in names {
                    if let Some(p) = name.strip_prefix("product=") {
                        out.push(p.to_string());
                    }
                }
            }
            Source::S3 { client, bucket, .. } => {
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&root)
                    .delimiter("/")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| SourceError::List {
                        location: format!("s3://{bucket}/{root}"),
                        message: telemetry_sink::error_line(&e),
                    })?;
                    for cp in page.common_prefixes() {
                        if let Some(p) = cp
                            .prefix()
                            .and_then(|p| p.strip_prefix(root.as_str()))
                            .and_then(|p| p.strip_prefix("product="))
                        {
                            out.push(p.trim_end_matches('/').to_string());
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every batch object of `product` filed under a day in `first..=last`,
    /// in key order (so a run is repeatable).
    pub async fn list(
        &self,
        product: &str,
        first: Day,
        last: Day,
    ) -> Result<Vec<ObjectRef>, SourceError> {
        Ok(self.list_with_strays(product, first, last).await?.0)
    }

    /// [`Source::list`], and the keys under those days that are not batch
    /// objects (not `.ndjson.zst`), which are not read: for a report to say
    /// so. Names starting with `_` or `.` are left out of those, as every
    /// Hive reader skips them (`compact`'s `_sources`, `.DS_Store`).
    pub async fn list_with_strays(
        &self,
        product: &str,
        first: Day,
        last: Day,
    ) -> Result<(Vec<ObjectRef>, Vec<String>), SourceError> {
        let mut strays = Vec::new();
        let mut stray = |key: String, name: &str| {
            if !name.starts_with('_') && !name.starts_with('.') {
                strays.push(key);
            }
        };
        let base = format!("{}product={product}/", self.root());
        let in_range = |dt: &str| Day::parse(dt).is_ok_and(|d| first <= d && d <= last);
        let mut out = Vec::new();
        match self {
            Source::Dir(dir) => {
                let product_dir = dir.join(&base);
                if !product_dir.exists() {
                    return Ok((out, Vec::new()));
                }
                for part in read_dir_names(&product_dir)? {
                    let Some(dt) = part.strip_prefix("dt=") else {
                        continue;
                    };
                    if !in_range(dt) {
                        continue;
                    }
                    let day_dir = product_dir.join(&part);
                    for name in read_dir_names(&day_dir)? {
                        if !name.ends_with(".ndjson.zst") {
                            stray(day_dir.join(&name).display().to_string(), &name);
                            continue;
                        }
                        let path = day_dir.join(&name);
                        let meta = std::fs::metadata(&path).map_err(|e| SourceError::List {
                            location: path.display().to_string(),
                            message: e.to_string(),
                        })?;
                        if meta.is_file() {
                            out.push(ObjectRef {
                                key: format!("{base}{part}/{name}"),
                                size: meta.len(),
                            });
                        }
                    }
                }
            }
            Source::S3 { client, bucket, .. } => {
                // Keys sort by day, so listing can start at the first day
                // and stop after the last instead of walking the product.
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&base)
                    .start_after(format!("{base}dt={first}"))
                    .into_paginator()
                    .send();
                'pages: while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| SourceError::List {
                        location: format!("s3://{bucket}/{base}"),
                        message: telemetry_sink::error_line(&e),
                    })?;
                    for obj in page.contents() {
                        let Some(key) = obj.key() else { continue };
                        // S3 only returns keys under the requested prefix;
                        // a store that does otherwise gets its stray keys
                        // skipped, not sliced at a wrong offset (or inside
                        // a UTF-8 character, which would panic).
                        let Some(rest) = key.strip_prefix(base.as_str()) else {
                            continue;
                        };
                        let Some((part, name)) = rest.split_once('/') else {
                            continue;
                        };
                        let Some(dt) = part.strip_prefix("dt=") else {
                            continue;
                        };
                        if Day::parse(dt).is_ok_and(|d| d > last) {
                            break 'pages;
                        }
                        if !in_range(dt) {
                            continue;
                        }
                        if name.ends_with(".ndjson.zst") && !name.contains('/') {
                            out.push(ObjectRef {
                                key: key.to_string(),
                                size: obj.size().unwrap_or(0).max(0) as u64,
                            });
                        } else {
                            stray(format!("s3://{bucket}/{key}"), name);
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        strays.sort();
        Ok((out, strays))
    }

    /// Start reading `obj`: open the file, or send the GET and take the
    /// response headers. The body is not read yet, so several objects can
    /// be opened ahead (hiding S3's per-request latency) while memory stays
    /// one connection's buffers each.
    pub async fn open(&self, obj: &ObjectRef) -> Result<Opened, SourceError> {
        let location = self.location(&obj.key);
        match self {
            Source::Dir(dir) => std::fs::File::open(dir.join(&obj.key))
                .map(Opened::File)
                .map_err(|e| SourceError::Read {
                    location,
                    message: e.to_string(),
                }),
            Source::S3 { client, bucket, .. } => client
                .get_object()
                .bucket(bucket)
                .key(&obj.key)
                .send()
                .await
                .map(|resp| Opened::S3(resp.body))
                .map_err(|e| SourceError::Read {
                    location,
                    message: telemetry_sink::error_line(&e),
                }),
        }
    }

    /// Stream an opened object, decompressing it and calling `on_line`
    /// with each line (without its newline). `on_line`'s error is reported
    /// with the object's location and the line number.
    pub async fn read_opened(
        &self,
        obj: &ObjectRef,
        opened: Opened,
        mut on_line: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), SourceError> {
        let location = self.location(&obj.key);
        let read_err = |message: String| SourceError::Read {
            location: location.clone(),
            message,
        };
        let mut dec = LineDecoder::new(&location)?;
        match opened {
            Opened::File(mut file) => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf).map_err(|e| read_err(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    dec.feed(&buf[..n], &mut on_line)?;
                }
            }
            Opened::S3(mut body) => {
                let limit = match self {
                    Source::S3 { read_timeout, .. } => *read_timeout,
                    Source::Dir(_) => DEFAULT_READ_TIMEOUT,
                };
                loop {
                    let next = tokio::time::timeout(limit, body.next())
                        .await
                        .map_err(|_| {
                            read_err(format!(
                                "no data for {:.0?} while reading the body (s3_timeout)",
                                limit
                            ))
                        })?;
                    let Some(chunk) = next else { break };
                    let chunk = chunk.map_err(|e| read_err(e.to_string()))?;
                    dec.feed(&chunk, &mut on_line)?;
                }
            }
        }
        dec.finish()
    }

    /// [`Source::open`] then [`Source::read_opened`].
    pub async fn read(
        &self,
        obj: &ObjectRef,
        on_line: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), SourceError> {
        let opened = self.open(obj).await?;
        self.read_opened(obj, opened, on_line).await
    }
}

/// An object whose body is ready to be read.
pub enum Opened {
    /// A file in a directory source.
    File(std::fs::File),
    /// The body of an S3 GET.
    S3(aws_sdk_s3::primitives::ByteStream),
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, SourceError> {
    let err = |e: std::io::Error| SourceError::List {
        location: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        // Names that are not UTF-8 cannot be batch keys.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Streaming zstd decompression split into lines.
struct LineDecoder<'a> {
    location: &'a str,
    dctx: zstd::stream::raw::Decoder<'static>,
    out: Vec<u8>,
    line: Vec<u8>,
    line_no: u64,
    /// zstd's hint after the last call: 0 when a frame just ended.
    hint: usize,
    fed: bool,
}

impl<'a> LineDecoder<'a> {
    fn new(location: &'a str) -> Result<Self, SourceError> {
        let dctx = zstd::stream::raw::Decoder::new().map_err(|e| SourceError::Read {
            location: location.to_string(),
            message: format!("cannot start zstd: {e}"),
        })?;
        Ok(LineDecoder {
            location,
            dctx,
            out: vec![0u8; 128 * 1024],
            line: Vec::new(),
            line_no: 0,
            hint: 0,
            fed: false,
        })
    }

    fn corrupt(&self, message: String) -> SourceError {
        SourceError::Corrupt {
            location: self.location.to_string(),
            message,
        }
    }

    fn feed(
        &mut self,
        input: &[u8],
        on_line: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), SourceError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        if input.is_empty() {
            return Ok(());
        }
        self.fed = true;
        let mut inb = InBuffer::around(input);
        loop {
            let mut outb = OutBuffer::around(&mut self.out[..]);
            let before = inb.pos();
            let hint = self
                .dctx
                .run(&mut inb, &mut outb)
                .map_err(|e| SourceError::Corrupt {
                    location: self.location.to_string(),
                    message: format!("not a valid zstd stream ({e})"),
                })?;
            let produced = outb.pos();
            // A call that moved nothing says nothing about the frame: after
            // one ends (its output exactly filling the buffer), the extra
            // call made to drain the buffer returns the next frame's header
            // hint, which is not a truncation.
            if produced > 0 || inb.pos() > before {
                self.hint = hint;
            }
            let full = produced == self.out.len();
            // Split what was produced into lines.
            let mut start = 0;
            let chunk = std::mem::take(&mut self.out);
            let mut result = Ok(());
            for (i, b) in chunk[..produced].iter().enumerate() {
                if *b == b'\n' {
                    // A line that ends in this chunk is checked too, not
                    // only the one left open at its end.
                    if self.line.len() + (i - start) > MAX_LINE {
                        result = Err(self.corrupt(format!(
                            "line {} is longer than {MAX_LINE} bytes",
                            self.line_no + 1
                        )));
                        break;
                    }
                    self.line.extend_from_slice(&chunk[start..i]);
                    start = i + 1;
                    if let Err(e) = self.emit(on_line) {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                self.line.extend_from_slice(&chunk[start..produced]);
                if self.line.len() > MAX_LINE {
                    result = Err(self.corrupt(format!(
                        "line {} is longer than {MAX_LINE} bytes",
                        self.line_no + 1
                    )));
                }
            }
            self.out = chunk;
            result?;
            // Done with this input once it is consumed and zstd has no more
            // output buffered (a full output buffer may mean more is waiting).
            if inb.pos() == input.len() && !full {
                return Ok(());
            }
        }
    }

    fn emit(
        &mut self,
        on_line: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), SourceError> {
        self.line_no += 1;
        let line = std::mem::take(&mut self.line);
        let r = if line.is_empty() {
            Ok(())
        } else {
            on_line(&line).map_err(|message| SourceError::Line {
                location: self.location.to_string(),
                line: self.line_no,
                message,
            })
        };
        self.line = line;
        self.line.clear();
        r
    }

    /// Check that the stream ended cleanly: after a whole frame, with the
    /// last line terminated.
    fn finish(self) -> Result<(), SourceError> {
        if !self.fed {
            return Err(self.corrupt("the object is empty".into()));
        }
        if self.hint != 0 {
            return Err(self.corrupt("the zstd stream is truncated".into()));
        }
        // The daemon ends every line with a newline; a missing one means
        // the object was cut short at a frame boundary or written by
        // something else.
        if !self.line.is_empty() {
            return Err(self.corrupt(format!(
                "the last line ({}) has no newline",
                self.line_no + 1
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(body: &[u8], chunk: usize) -> Result<Vec<String>, SourceError> {
        let mut dec = LineDecoder::new("test-object")?;
        let mut out = Vec::new();
        let mut on_line = |l: &[u8]| {
            out.push(String::from_utf8_lossy(l).to_string());
            Ok(())
        };
        for c in body.chunks(chunk) {
            dec.feed(c, &mut on_line)?;
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn decodes_in_any_chunking_including_large_outputs() {
        let mut text = String::new();
        for i in 0..50_000 {
            text.push_str(&format!("{{\"n\":{i}}}\n"));
        }
        let z = zstd::stream::encode_all(text.as_bytes(), 3).unwrap();
        for chunk in [1, 7, 4096, z.len()] {
            let lines = lines_of(&z, chunk).unwrap();
            assert_eq!(lines.len(), 50_000);
            assert_eq!(lines[49_999], "{\"n\":49999}");
        }
        // Two concatenated frames are one stream.
        let mut two = z.clone();
        two.extend_from_slice(&z);
        assert_eq!(lines_of(&two, 1000).unwrap().len(), 100_000);
    }

    #[test]
    fn damage_is_an_error_naming_the_object() {
        let z = zstd::stream::encode_all(&b"{\"a\":1}\n".repeat(1000)[..], 3).unwrap();
        let truncated = &z[..z.len() - 3];
        let e = lines_of(truncated, 100).unwrap_err().to_string();
        assert!(e.contains("test-object") && e.contains("truncated"), "{e}");
        let e = lines_of(b"this is not zstd at all", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test-object") && e.contains("zstd"), "{e}");
        let e = lines_of(b"", 100).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let no_newline = zstd::stream::encode_all(&b"{\"a\":1}"[..], 3).unwrap();
        let e = lines_of(&no_newline, 100).unwrap_err().to_string();
        assert!(e.contains("no newline"), "{e}");
        let huge = zstd::stream::encode_all(&vec![b'x'; MAX_LINE + 10][..], 3).unwrap();
        let e = lines_of(&huge, 4096).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
        // A long line that ends within a chunk of output (not left open
        // at its end) is refused too; one of exactly MAX_LINE is not.
        for extra in [1, 10_000, 100_000] {
            let mut body = b"{\"a\":1}\n".to_vec();
            body.extend(vec![b'x'; MAX_LINE + extra]);
            body.push(b'\n');
            let z = zstd::stream::encode_all(&body[..], 3).unwrap();
            let e = lines_of(&z, z.len()).unwrap_err().to_string();
            assert!(e.contains("line 2 is longer than"), "{extra}: {e}");
        }
        let mut body = vec![b'x'; MAX_LINE];
        body.push(b'\n');
        let z = zstd::stream::encode_all(&body[..], 3).unwrap();
        assert_eq!(lines_of(&z, z.len()).unwrap().len(), 1);
    }

    #[test]
    fn a_body_that_exactly_fills_the_output_buffer_is_whole() {
        // 128 KiB of output per call: bodies of one, two and twenty times
        // that end their frame on a full buffer, which is no truncation.
        for times in [1, 2, 20] {
            let line = format!("{{\"pad\":\"{}\"}}\n", "p".repeat(128 - 11));
            assert_eq!(line.len(), 128);
            let body = line.repeat(times * 1024);
            assert_eq!(body.len(), times * 128 * 1024);
            let z = zstd::stream::encode_all(body.as_bytes(), 3).unwrap();
            for chunk in [1, 4096, z.len()] {
                let lines = lines_of(&z, chunk).unwrap();
                assert_eq!(
                    lines.len(),
                    times * 1024,
                    "{times} x 128 KiB, chunks of {chunk}"
                );
            }
            // Cut short, it is still a truncation.
            let e = lines_of(&z[..z.len() - 1], 4096).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{e}");
        }
    }

    #[test]
    fn a_mirror_overlaps_its_source_only_when_one_root_holds_the_other() {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let s3 = |bucket: &str, prefix: &str| match fake_s3(addr, std::time::Duration::from_secs(1))
        {
            Source::S3 {
                client,
                read_timeout,
                ..
            } => Source::S3 {
                client,
                bucket: bucket.into(),
                prefix: prefix.into(),
                read_timeout,
            },
            Source::Dir(_) => unreachable!(),
        };
        // Roots are PREFIX/v1/: "a" and "ab" are apart, "" holds only v1/.
        assert!(!s3("b", "a").overlaps(&s3("b", "ab")));
        assert!(!s3("b", "").overlaps(&s3("b", "mirror")));
        assert!(!s3("b", "a").overlaps(&s3("c", "a")));
        assert!(s3("b", "a").overlaps(&s3("b", "a")));
        assert!(s3("b", "").overlaps(&s3("b", "v1")), "v1/v1/ is inside v1/");
        assert!(s3("b", "a").overlaps(&s3("b", "a/v1/x")));
        assert!(!s3("b", "a").overlaps(&Source::Dir("/tmp/a".into())));
        let dir = tempfile::tempdir().unwrap();
        let d = |p: &str| Source::Dir(dir.path().join(p));
        assert!(d("raw").overlaps(&d("raw/v1/m")) && d("raw").overlaps(&d("raw")));
        assert!(!d("raw").overlaps(&d("raw2")) && !d("raw").overlaps(&d("mirror")));
    }

    /// A source reading bucket "b" at a hand-written HTTP server on `addr` (no prefix).
    fn fake_s3(addr: std::net::SocketAddr, read_timeout: std::time::Duration) -> Source {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .endpoint_url(format!("http://{addr}"))
            .force_path_style(true)
            .build();
        Source::S3 {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: "b".into(),
            prefix: String::new(),
            read_timeout,
        }
    }

    /// An S3 server that sends the headers and the start of a body, then
    /// nothing: the read must fail within the timeout, naming the key.
    #[tokio::test]
    async fn a_body_that_stalls_times_out_naming_the_key() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let z = zstd::stream::encode_all(&b"{\"n\":1}\n"[..], 3).unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "client hung up");
                req.extend_from_slice(&buf[..n]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                z.len() + 1000
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(&z[..4]).await.unwrap();
            conn.flush().await.unwrap();
            // Hold the connection open, sending nothing more.
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            drop(conn);
        });
        let source = fake_s3(addr, std::time::Duration::from_millis(300));
        let obj = ObjectRef {
            key: "v1/product=p/dt=2026-11-01/stalled.ndjson.zst".into(),
            size: 0,
        };
        let started = std::time::Instant::now();
        // The outer limit turns a regression (no timeout) into a failure,
        // not a hung test.
        let res = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            source.read(&obj, |_| Ok(())),
        )
        .await
        .expect("the read must time out by itself");
        let err = res.expect_err("a stalled body is an error").to_string();
        assert!(
            err.contains("s3://b/v1/product=p/dt=2026-11-01/stalled.ndjson.zst")
                && err.contains("no data"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        server.abort();
    }

    /// A store whose listing returns keys outside the requested prefix
    /// (one that shorter-than-prefix slicing would cut inside a UTF-8
    /// character, one that it would misread as a `dt=` folder): both are
    /// skipped, the real batch is listed.
    #[tokio::test]
    async fn listed_keys_outside_the_prefix_are_skipped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "client hung up");
                req.extend_from_slice(&buf[..n]);
            }
            let keys = [
                "v1/product=p/dt=2026-11-01/real.ndjson.zst",
                "éééééééé/dt=2026-11-01/utf8.ndjson.zst",
                "xxxxxxxxxxxxxdt=2026-11-01/stray.ndjson.zst",
                "v1/product=p/dt=2026-11-01/_sources",
                "v1/product=p/dt=2026-11-01/notes.txt",
            ];
            let contents: String = keys
                .iter()
                .map(|k| format!("<Contents><Key>{k}</Key><Size>10</Size></Contents>"))
                .collect();
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name><Prefix>v1/product=p/</Prefix><KeyCount>5</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/xml\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(body.as_bytes()).await.unwrap();
            conn.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let source = fake_s3(addr, std::time::Duration::from_secs(5));
        let day = Day::parse("2026-11-01").unwrap();
        let (objects, strays) = source.list_with_strays("p", day, day).await.unwrap();
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["v1/product=p/dt=2026-11-01/real.ndjson.zst"]);
        // What is not a batch under the day is named, but not `_sources`.
        assert_eq!(strays, ["s3://b/v1/product=p/dt=2026-11-01/notes.txt"]);
        server.abort();
    }

    #[tokio::test]
    async fn files_in_a_day_that_are_not_batches_are_named_not_read() {
        let root = tempfile::tempdir().unwrap();
        let day_dir = root.path().join("v1/product=p/dt=2026-11-01");
        std::fs::create_dir_all(&day_dir).unwrap();
        for name in ["a-1-2.ndjson.zst", "x.ndjson", ".DS_Store", "_sources"] {
            std::fs::write(day_dir.join(name), b"x").unwrap();
        }
        let source = Source::Dir(root.path().to_path_buf());
        let day = Day::parse("2026-11-01").unwrap();
        let (objects, strays) = source.list_with_strays("p", day, day).await.unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(strays, [day_dir.join("x.ndjson").display().to_string()]);
    }
}
