//! Windows: the user SID of a process, security descriptors, the registry.

#![allow(unsafe_code)]

pub mod registry;
pub mod security;

pub use registry::machine_guid;

use std::ffi::c_void;
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenGroups, TokenUser, PSID, SID_AND_ATTRIBUTES, TOKEN_GROUPS,
    TOKEN_INFORMATION_CLASS, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcessId, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

pub use crate::LOCAL_SYSTEM_SID;

/// `s` as a NUL-terminated wide string, for Win32 calls.
pub fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt;
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// A wide, NUL-terminated string Windows allocated with `LocalAlloc`, as
/// text; frees it.
///
/// # Safety
/// `p` is null or such a string.
pub unsafe fn take_local_wide(p: *mut u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut len = 0;
    while *p.add(len) != 0 {
        len += 1;
    }
    let text = String::from_utf16_lossy(std::slice::from_raw_parts(p, len));
    LocalFree(p as *mut c_void);
    Some(text)
}

/// Calls `f` with the access token of process `pid` (opened for query,
/// closed after).
fn with_token<T>(pid: u32, f: impl FnOnce(HANDLE) -> Option<T>) -> Option<T> {
    // SAFETY: plain Win32 calls on handles this function opens and closes.
    unsafe {
        let process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if process.is_null() {
            return None;
        }
        let mut token: HANDLE = std::ptr::null_mut();
        let opened = OpenProcessToken(process, TOKEN_QUERY, &mut token);
        CloseHandle(process);
        if opened == 0 {
            return None;
        }
        let out = f(token);
        CloseHandle(token);
        out
    }
}

/// One class of information about `token`, in a buffer sized for it and
/// aligned for the structures Windows puts there (u64 elements).
fn token_information(token: HANDLE, class: TOKEN_INFORMATION_CLASS) -> Option<Vec<u64>> {
    let mut len = 0u32;
    // SAFETY: the first call only sizes the buffer; the second fills it.
    unsafe {
        GetTokenInformation(token, class, std::ptr::null_mut(), 0, &mut len);
        let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
        let ok = GetTokenInformation(token, class, buf.as_mut_ptr() as *mut c_void, len, &mut len);
        (ok != 0).then_some(buf)
    }
}

/// A SID as text (`S-1-5-21-...`).
///
/// # Safety
/// `sid` points at a valid SID.
unsafe fn sid_string(sid: PSID) -> Option<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    if ConvertSidToStringSidW(sid, &mut text) == 0 {
        return None;
    }
    take_local_wide(text)
}

/// A group in a token that counts in access checks (winnt.h; windows-sys
/// has it under System_SystemServices, a feature not worth its build).
const SE_GROUP_ENABLED: u32 = 0x4;

/// The SID of the Administrators group.
pub const ADMINISTRATORS_SID: &str = "S-1-5-32-544";

/// The SID of TrustedInstaller, which owns what Windows itself installs.
pub const TRUSTED_INSTALLER_SID: &str =
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464";

/// Whether `owner` (a SID string) is this process's user or one that may
/// administer the machine anyway (LocalSystem, the administrators,
/// TrustedInstaller): what such an owner made, no other standard user can
/// have made or change.
pub fn trusted_owner(owner: &str) -> bool {
    // This process's SID does not change: one token query, not one per
    // file the catalogue checks.
    static OWN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    [LOCAL_SYSTEM_SID, ADMINISTRATORS_SID, TRUSTED_INSTALLER_SID].contains(&owner)
        || OWN.get_or_init(own_sid).as_deref() == Some(owner)
}

/// The user SID of process `pid`, as a string (`S-1-5-21-...`).
pub fn process_sid(pid: u32) -> Option<String> {
    with_token(pid, |token| {
        let buf = token_information(token, TokenUser)?;
        // SAFETY: the buffer holds a TOKEN_USER whose SID points into it.
        unsafe { sid_string((*(buf.as_ptr() as *const TOKEN_USER)).User.Sid) }
    })
}

/// Whether process `pid` runs with the Administrators group enabled in its
/// token: an elevated administrator (a filtered, unelevated token has the
/// group for deny only), the counterpart of root on Unix.
pub fn process_is_elevated_admin(pid: u32) -> bool {
    with_token(pid, |token| {
        let buf = token_information(token, TokenGroups)?;
        let p = buf.as_ptr() as *const TOKEN_GROUPS;
        // SAFETY: the buffer holds a TOKEN_GROUPS with GroupCount entries
        // (Groups is declared with one; the rest follow it in the buffer),
        // whose SIDs point into the buffer. The entries' pointer is derived
        // from the buffer's, not from a reference to the one-entry array,
        // and the count is checked against the buffer's size.
        unsafe {
            let count = (*p).GroupCount as usize;
            let first = std::ptr::addr_of!((*p).Groups) as *const SID_AND_ATTRIBUTES;
            let end = first.add(count) as usize;
            if end > buf.as_ptr() as usize + buf.len() * 8 {
                return None;
            }
            let entries = std::slice::from_raw_parts(first, count);
            Some(entries.iter().any(|g| {
                g.Attributes & SE_GROUP_ENABLED != 0
                    && sid_string(g.Sid).as_deref() == Some(ADMINISTRATORS_SID)
            }))
        }
    })
    .unwrap_or(false)
}

/// Whether this process runs under wine (whose `ntdll` exports
/// `wine_get_version`): tests say what wine does not enforce (pipe and file
/// ACLs, the first-instance flag) instead of failing on it.
pub fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: NUL-terminated names; the module handle is not freed.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr() as *const u8);
        !ntdll.is_null()
            && GetProcAddress(ntdll, c"wine_get_version".as_ptr() as *const u8).is_some()
    }
}

/// This process's user SID.
pub fn own_sid() -> Option<String> {
    // SAFETY: no preconditions.
    process_sid(unsafe { GetCurrentProcessId() })
}

/// The volume serial number and file index of an open file: equal for two
/// handles exactly when they are the same file.
pub fn file_id(file: &std::fs::File) -> std::io::Result<(u32, u64)> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION,
    };
    // SAFETY: a valid handle and an out-struct.
    unsafe {
        let mut info: BY_HANDLE_FILE_INFORMATION = std::mem::zeroed();
        if GetFileInformationByHandle(file.as_raw_handle() as HANDLE, &mut info) == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((
            info.dwVolumeSerialNumber,
            (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_sid() {
        let sid = super::own_sid().expect("a SID");
        assert!(sid.starts_with("S-1-"), "{sid}");
    }
}
