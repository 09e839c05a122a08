//! Named pipes, with timeouts: the pipe is opened for overlapped I/O, and
//! each read or write waits for its completion at most the timeout, then
//! cancels it (`CancelIoEx`) and reports `TimedOut`.
//!
//! Before anything is sent, the pipe's server must run as this user or as
//! LocalSystem (a machine-wide daemon): another user who created a pipe of
//! that name first cannot receive our events. Where this user may not read
//! the server's process token (LocalSystem's service, to a standard user),
//! the pipe's owner says it instead: only LocalSystem or an administrator
//! can own it, and the service's pipe lets no one else create instances.

#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use telemetry_platform::windows::security::handle_owner;
use telemetry_platform::windows::{own_sid, process_sid, ADMINISTRATORS_SID, LOCAL_SYSTEM_SID};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_IO_PENDING, ERROR_PIPE_BUSY, GENERIC_READ, HANDLE,
    INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, WriteFile, FILE_FLAG_OVERLAPPED, FILE_WRITE_DATA, OPEN_EXISTING,
    SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeServerProcessId, WaitNamedPipeW};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject, INFINITE};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

/// A connection to the daemon's named pipe.
pub struct Stream {
    pipe: HANDLE,
    event: HANDLE,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

// The handles are owned by this value and used by one thread at a time.
unsafe impl Send for Stream {}

fn wide(p: &Path) -> Vec<u16> {
    telemetry_platform::windows::wide(p.as_os_str())
}

impl Stream {
    /// Open the pipe; when every instance is busy, wait (up to a second at
    /// a time) for one, as a Unix connect waits on a full backlog.
    pub fn connect(path: &Path, wait: Duration) -> std::io::Result<Stream> {
        // A caller's `Duration::MAX` is a long wait, not an overflow.
        let deadline = std::time::Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(86_400));
        loop {
            match Stream::connect_now(path) {
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "every instance of the pipe stayed busy for {}",
                                crate::human_duration(wait)
                            ),
                        ));
                    }
                    let ms = left.as_millis().clamp(1, 1000) as u32;
                    // SAFETY: a NUL-terminated name.
                    unsafe { WaitNamedPipeW(wide(path).as_ptr(), ms) };
                }
                other => return other,
            }
        }
    }

    /// Open the pipe without waiting: every instance busy
    /// (`ERROR_PIPE_BUSY`) fails at once, and the caller spools.
    pub fn connect_now(path: &Path) -> std::io::Result<Stream> {
        let name = wide(path);
        // SAFETY: a NUL-terminated name; the handle is owned by the Stream
        // (closed on drop). SECURITY_IDENTIFICATION: the server may learn
        // who we are, not act as us. FILE_WRITE_DATA, not GENERIC_WRITE:
        // that includes FILE_CREATE_PIPE_INSTANCE, which the service's pipe
        // grants its users no longer.
        let pipe = unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | FILE_WRITE_DATA,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if pipe == INVALID_HANDLE_VALUE {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a manual-reset event, unnamed; owned by the Stream.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        let stream = Stream {
            pipe,
            event,
            read_timeout: None,
            write_timeout: None,
        };
        if event.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        stream.check_server()?;
        Ok(stream)
    }

    /// The server must be this user or LocalSystem; one whose process
    /// token this user may not read must serve a pipe LocalSystem or the
    /// administrators own.
    fn check_server(&self) -> std::io::Result<()> {
        let mut pid = 0u32;
        // SAFETY: a valid pipe handle and an out-pointer.
        if unsafe { GetNamedPipeServerProcessId(self.pipe, &mut pid) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let refuse = |who: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("the pipe is served by another user ({who}): not telemetryd's"),
            ))
        };
        match (process_sid(pid), own_sid()) {
            (Some(s), Some(m)) if s == m || s == LOCAL_SYSTEM_SID => Ok(()),
            (Some(s), _) => refuse(&s),
            // Another user's token is not readable by a standard user:
            // the pipe's owner (its first instance's maker) decides.
            (None, _) => match handle_owner(self.pipe) {
                Ok(o) if o == LOCAL_SYSTEM_SID || o == ADMINISTRATORS_SID => Ok(()),
                Ok(o) => refuse(&format!("pipe owned by {o}")),
                Err(_) => refuse("unknown"),
            },
        }
    }

    /// Write what the pipe takes without waiting: here always 0, so the
    /// caller writes with its timeout.
    pub fn write_now(&self, _buf: &[u8]) -> std::io::Result<usize> {
        Ok(0)
    }

    /// Bound the next reads.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> std::io::Result<()> {
        self.read_timeout = t;
        Ok(())
    }

    /// Bound the next writes.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> std::io::Result<()> {
        self.write_timeout = t;
        Ok(())
    }

    /// Run one overlapped operation and wait for it at most `timeout`.
    fn io(
        &mut self,
        timeout: Option<Duration>,
        start: impl FnOnce(HANDLE, *mut OVERLAPPED) -> i32,
    ) -> std::io::Result<usize> {
        // SAFETY: `ov` lives on this frame until the operation completes or
        // is cancelled and waited for (GetOverlappedResult with wait=TRUE
        // below), so the kernel never writes to it after we return.
        unsafe {
            let mut ov: OVERLAPPED = std::mem::zeroed();
            ov.hEvent = self.event;
            let started = start(self.pipe, &mut ov);
            if started == 0 && GetLastError() != ERROR_IO_PENDING {
                return Err(std::io::Error::last_os_error());
            }
            let ms = timeout.map_or(INFINITE, |t| {
                t.as_millis().clamp(1, u128::from(INFINITE - 1)) as u32
            });
            let waited = WaitForSingleObject(self.event, ms);
            let mut n = 0u32;
            if waited != WAIT_OBJECT_0 {
                CancelIoEx(self.pipe, &ov);
                // It may have completed before the cancel: then the bytes
                // moved, and a timeout would lose or repeat them.
                if GetOverlappedResult(self.pipe, &ov, &mut n, 1) != 0 {
                    return Ok(n as usize);
                }
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            if GetOverlappedResult(self.pipe, &ov, &mut n, 1) == 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let ptr = buf.as_mut_ptr();
        let timeout = self.read_timeout;
        match self.io(timeout, |pipe, ov| unsafe {
            // SAFETY: `buf` outlives the operation (io waits for it).
            ReadFile(pipe, ptr, len, std::ptr::null_mut(), ov)
        }) {
            // The server closed its end: end of stream, as on a socket.
            Err(e) if e.raw_os_error() == Some(109 /* ERROR_BROKEN_PIPE */) => Ok(0),
            other => other,
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let ptr = buf.as_ptr();
        let timeout = self.write_timeout;
        self.io(timeout, |pipe, ov| unsafe {
            // SAFETY: `buf` outlives the operation (io waits for it).
            WriteFile(pipe, ptr, len, std::ptr::null_mut(), ov)
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: both handles are owned by this value.
        unsafe {
            if !self.event.is_null() {
                CloseHandle(self.event);
            }
            CloseHandle(self.pipe);
        }
    }
}
