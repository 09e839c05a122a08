//! Named pipes: the listener, the client's SID, and the pipe's security
//! descriptor.
//!
//! Each connection is one pipe instance: the listener keeps one instance
//! waiting for a client, and when a client connects it hands that one to
//! the server and creates the next. The first instance is created with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE`, so a second daemon on the same name
//! fails instead of sharing it; remote clients are rejected
//! (`PIPE_REJECT_REMOTE_CLIENTS`); and the security descriptor admits only
//! the daemon's own user (machine-wide: LocalSystem, the administrators and
//! the authenticated users, who may emit). Past the instance limit a client
//! meets `ERROR_PIPE_BUSY`, which clients treat as busy (they spool).
//!
//! There is no second handle for answers from the store thread: the
//! connection task writes every answer.

#![allow(unsafe_code)]

use super::PeerIdentity;
use std::ffi::{c_void, OsStr, OsString};
use std::os::windows::io::AsRawHandle;
use telemetry_platform::windows::security::{handle_sddl, Descriptor};
use telemetry_platform::windows::{own_sid, process_is_elevated_admin, process_sid, wide};
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId;

/// One client connection.
pub type Conn = NamedPipeServer;

/// Most instances of one pipe Windows allows (`PIPE_UNLIMITED_INSTANCES`
/// is 255, meaning "up to 255").
pub const MAX_INSTANCES: usize = 254;

/// The SDDL of the pipe's security descriptor: the owner (and only the
/// owner) has full access; machine-wide, LocalSystem and the
/// administrators have full access and authenticated users may read and
/// write (emit): `0x12019b` is `FILE_GENERIC_READ | FILE_GENERIC_WRITE`
/// without `FILE_APPEND_DATA`, which on a pipe is
/// `FILE_CREATE_PIPE_INSTANCE` — with it a user could serve instances of
/// the service's pipe, under its owner. No one else may even open it.
pub fn pipe_sddl(owner_sid: &str, machine_wide: bool) -> String {
    if machine_wide {
        format!("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;{USERS_PIPE_ACCESS:#x};;;AU)")
    } else {
        format!("D:P(A;;GA;;;{owner_sid})")
    }
}

/// What authenticated users may do with the machine-wide pipe (see
/// [`pipe_sddl`]): `FILE_GENERIC_READ` (0x120089) and `FILE_GENERIC_WRITE`
/// (0x120116) without `FILE_CREATE_PIPE_INSTANCE` (0x4). Clients open it
/// with `GENERIC_READ | FILE_WRITE_DATA`, inside this.
pub const USERS_PIPE_ACCESS: u32 = (0x0012_0089 | 0x0012_0116) & !0x4;

/// The daemon's listening pipe.
pub struct Listener {
    name: OsString,
    descriptor: Descriptor,
    max_instances: usize,
    next: tokio::sync::Mutex<Option<NamedPipeServer>>,
}

impl Listener {
    /// Create the first instance of the pipe `name` (`\\.\pipe\...`).
    /// Fails when another process serves that name already.
    pub fn bind(
        name: &OsStr,
        machine_wide: bool,
        max_instances: usize,
    ) -> std::io::Result<Listener> {
        let owner = match own_identity() {
            PeerIdentity::Sid(s) => s,
            _ => return Err(std::io::Error::other("cannot read this process's SID")),
        };
        let descriptor = Descriptor::from_sddl(&pipe_sddl(&owner, machine_wide))?;
        let listener = Listener {
            name: name.to_os_string(),
            descriptor,
            max_instances: max_instances.clamp(1, MAX_INSTANCES),
            next: tokio::sync::Mutex::new(None),
        };
        let first = listener.create(true)?;
        *listener.next.try_lock().expect("new") = Some(first);
        Ok(listener)
    }

    fn create(&self, first: bool) -> std::io::Result<NamedPipeServer> {
        let mut attrs = self.descriptor.attributes();
        let mut options = ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true)
            .max_instances(self.max_instances);
        // SAFETY: `attrs` points at a descriptor that lives as long as
        // `self`, and is read only during this call.
        unsafe {
            options.create_with_security_attributes_raw(
                &self.name,
                &mut attrs as *mut SECURITY_ATTRIBUTES as *mut c_void,
            )
        }
    }

    /// The next connection. Between two connections the pipe always has
    /// an instance waiting (unless the instance limit is reached, when
    /// clients meet `ERROR_PIPE_BUSY` until one closes).
    pub async fn accept(&self) -> std::io::Result<Conn> {
        let mut next = self.next.lock().await;
        loop {
            if next.is_none() {
                match self.create(false) {
                    Ok(server) => *next = Some(server),
                    Err(e) => {
                        tracing::debug!(error = %e, "no pipe instance free; waiting");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let server = next.as_ref().expect("made above");
            if let Err(e) = server.connect().await {
                // A broken instance would fail again at every try: replace
                // it, the new one made before the old is closed, so the
                // pipe's name never lapses (another user could take it).
                *next = self.create(false).ok();
                return Err(e);
            }
            let conn = next.take().expect("made above");
            *next = self.create(false).ok();
            return Ok(conn);
        }
    }

    /// The pipe's security descriptor as Windows has it, in SDDL (owner
    /// and DACL), read back from the waiting instance.
    pub async fn sddl(&self) -> std::io::Result<String> {
        let next = self.next.lock().await;
        let server = next
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no instance waiting"))?;
        handle_sddl(server.as_raw_handle() as HANDLE)
    }
}

/// Whether something serves the pipe `endpoint` now (it exists; every
/// instance may be busy).
pub fn serves(endpoint: &std::path::Path) -> bool {
    use windows_sys::Win32::System::Pipes::WaitNamedPipeW;
    let name = wide(endpoint.as_os_str());
    // SAFETY: a NUL-terminated name. A timeout of 1 ms: only whether the
    // pipe exists matters (ERROR_FILE_NOT_FOUND when it does not).
    let ok = unsafe { WaitNamedPipeW(name.as_ptr(), 1) };
    ok != 0 || std::io::Error::last_os_error().raw_os_error() != Some(2)
}

/// The client's SID, from its process id, and whether it runs as an
/// elevated administrator.
pub fn peer_identity(conn: &Conn) -> PeerIdentity {
    let mut pid = 0u32;
    // SAFETY: a valid pipe handle and an out-pointer.
    let ok = unsafe { GetNamedPipeClientProcessId(conn.as_raw_handle() as HANDLE, &mut pid) };
    if ok == 0 {
        return PeerIdentity::Unknown;
    }
    match process_sid(pid) {
        Some(sid) if process_is_elevated_admin(pid) => PeerIdentity::ElevatedSid(sid),
        Some(sid) => PeerIdentity::Sid(sid),
        None => PeerIdentity::Unknown,
    }
}

/// The daemon's own SID.
pub fn own_identity() -> PeerIdentity {
    own_sid().map_or(PeerIdentity::Unknown, PeerIdentity::Sid)
}

/// No second handles on Windows: this type has no values.
#[derive(Debug, Clone)]
pub enum ReplyTo {}

/// Never a second handle on Windows.
pub fn second_handle(_conn: &Conn) -> Option<ReplyTo> {
    None
}

/// Unreachable: there are no second handles to write to.
pub fn write_now(socket: &ReplyTo, _frame: &[u8]) -> usize {
    match *socket {}
}

/// Windows has no open-file limit of the Unix kind; second handles are
/// not used there anyway.
pub fn open_file_limit() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whether this runs under wine (ntdll exports wine_get_version).
    fn unique() -> OsString {
        OsString::from(format!(
            r"\\.\pipe\telemetryd-unit-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    #[tokio::test]
    async fn the_pipe_admits_only_its_owner_and_only_one_daemon() {
        let name = unique();
        let listener = Listener::bind(&name, false, 4).unwrap();
        let PeerIdentity::Sid(me) = own_identity() else {
            panic!("no SID for this process")
        };
        // Read back from the object itself, not from what we asked for.
        let sddl = listener.sddl().await.unwrap();
        assert!(sddl.contains("D:P"), "protected DACL: {sddl}");
        assert!(sddl.contains(&me), "the owner's ACE: {sddl}");
        assert!(!sddl.contains(";;;WD)"), "nothing for Everyone: {sddl}");
        // A second daemon on the name is refused (first-instance flag).
        // Wine does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE: there the
        // state directory's lock is what stops a second daemon (the
        // end-to-end test checks that).
        if !telemetry_platform::windows::under_wine() {
            assert!(Listener::bind(&name, false, 4).is_err());
        }
        // A client is seen as this user.
        let client_name = name.clone();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::windows::named_pipe::ClientOptions::new()
                .open(&client_name)
                .unwrap();
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            b[0]
        });
        let mut conn = listener.accept().await.unwrap();
        // (Elevated or not: wine's processes are.)
        assert_eq!(peer_identity(&conn).sid(), Some(me.as_str()));
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await.unwrap();
        conn.write_all(b"y").await.unwrap();
        assert_eq!(client.await.unwrap(), b'y');
        assert!(serves(std::path::Path::new(&name)));
        assert!(!serves(std::path::Path::new(&unique())));
    }

    #[test]
    fn the_machine_wide_descriptor_names_system_administrators_and_users() {
        assert_eq!(
            pipe_sddl("S-1-5-21-1", true),
            "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12019b;;;AU)"
        );
        assert_eq!(pipe_sddl("S-1-5-21-1", false), "D:P(A;;GA;;;S-1-5-21-1)");
    }
}
