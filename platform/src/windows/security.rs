//! Security descriptors: made from SDDL (for the pipe and the machine-wide
//! state directory) and read back as SDDL (so tests can check what Windows
//! holds, where wine does not enforce it).

use super::{take_local_wide, wide};
use std::ffi::OsStr;
use std::path::Path;
use windows_sys::Win32::Foundation::{LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW, GetSecurityInfo,
    SetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetSecurityDescriptorDacl, GetSecurityDescriptorOwner, ACL, DACL_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    SECURITY_ATTRIBUTES,
};

/// A security descriptor made from SDDL, freed on drop.
pub struct Descriptor(PSECURITY_DESCRIPTOR);

// The descriptor is only read (by the calls it is passed to) once made.
unsafe impl Send for Descriptor {}
unsafe impl Sync for Descriptor {}

impl Descriptor {
    /// Parse `sddl` (e.g. `D:P(A;;GA;;;SY)`).
    pub fn from_sddl(sddl: &str) -> std::io::Result<Descriptor> {
        let text = wide(OsStr::new(sddl));
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `text` is NUL-terminated; `sd` receives a LocalAlloc'd
        // descriptor that Drop frees.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                text.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Descriptor(sd))
    }

    /// `SECURITY_ATTRIBUTES` pointing at this descriptor (valid while it
    /// lives), for the `Create*` calls.
    pub fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.0,
            bInheritHandle: 0,
        }
    }

    /// The descriptor's owner (null when it names none).
    fn owner(&self) -> PSID {
        let mut owner: PSID = std::ptr::null_mut();
        let mut defaulted = 0;
        // SAFETY: a valid descriptor and out-pointers.
        unsafe { GetSecurityDescriptorOwner(self.0, &mut owner, &mut defaulted) };
        owner
    }

    /// The descriptor's DACL (null when it has none).
    fn dacl(&self) -> *mut ACL {
        let (mut present, mut defaulted) = (0, 0);
        let mut dacl: *mut ACL = std::ptr::null_mut();
        // SAFETY: a valid descriptor and out-pointers.
        unsafe { GetSecurityDescriptorDacl(self.0, &mut present, &mut dacl, &mut defaulted) };
        if present == 0 {
            std::ptr::null_mut()
        } else {
            dacl
        }
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptor... above.
        unsafe { LocalFree(self.0) };
    }
}

/// A descriptor Windows returned (LocalAlloc'd), as SDDL (owner and DACL).
fn to_sddl(sd: PSECURITY_DESCRIPTOR) -> std::io::Result<String> {
    let what = DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION;
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sd` is a valid descriptor; `text` receives a LocalAlloc'd
    // string that take_local_wide frees.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            what,
            &mut text,
            std::ptr::null_mut(),
        )
    };
    let out = if ok == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: allocated by the call above.
        unsafe { take_local_wide(text) }.ok_or_else(|| std::io::Error::other("empty SDDL"))
    };
    // SAFETY: allocated by the caller's Get*SecurityInfo.
    unsafe { LocalFree(sd) };
    out
}

/// The owner of a descriptor Windows returned (LocalAlloc'd), as a SID
/// string; frees the descriptor.
fn owner_of(sd: PSECURITY_DESCRIPTOR) -> std::io::Result<String> {
    let mut owner: PSID = std::ptr::null_mut();
    let mut defaulted = 0;
    // SAFETY: `sd` is a valid descriptor and the out-pointers are valid;
    // `owner` points into `sd`, read before it is freed.
    let out = unsafe {
        if GetSecurityDescriptorOwner(sd, &mut owner, &mut defaulted) == 0 {
            Err(std::io::Error::last_os_error())
        } else if owner.is_null() {
            Err(std::io::Error::other("no owner"))
        } else {
            super::sid_string(owner).ok_or_else(|| std::io::Error::other("unreadable owner SID"))
        }
    };
    // SAFETY: allocated by the caller's Get*SecurityInfo.
    unsafe { LocalFree(sd) };
    out
}

/// The descriptor of the file or directory `path` (a link's target), with
/// the parts `what` names; LocalAlloc'd, for to_sddl or owner_of to free.
fn path_descriptor(path: &Path, what: u32) -> std::io::Result<PSECURITY_DESCRIPTOR> {
    let name = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name and valid out-pointers.
    let err = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            what,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err as i32));
    }
    Ok(sd)
}

/// The descriptor of the kernel object `handle`, as [`path_descriptor`].
fn handle_descriptor(handle: HANDLE, what: u32) -> std::io::Result<PSECURITY_DESCRIPTOR> {
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-pointers are valid.
    let err = unsafe {
        GetSecurityInfo(
            handle,
            SE_KERNEL_OBJECT,
            what,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err as i32));
    }
    Ok(sd)
}

/// The owner SID (`S-1-...`) of the file or directory `path` (a link's
/// target): who may change its DACL, whatever the DACL says.
pub fn path_owner(path: &Path) -> std::io::Result<String> {
    owner_of(path_descriptor(path, OWNER_SECURITY_INFORMATION)?)
}

/// The owner SID of the kernel object `handle` (a pipe: whoever created
/// its first instance; no one can make another user the owner). Readable
/// with a client's access (`READ_CONTROL`), where the server's process
/// token is not when a standard user asks about LocalSystem's.
pub fn handle_owner(handle: HANDLE) -> std::io::Result<String> {
    owner_of(handle_descriptor(handle, OWNER_SECURITY_INFORMATION)?)
}

/// The owner and DACL of the kernel object `handle` (a pipe), in SDDL.
pub fn handle_sddl(handle: HANDLE) -> std::io::Result<String> {
    to_sddl(handle_descriptor(
        handle,
        DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION,
    )?)
}

/// The owner and DACL of the file or directory `path`, in SDDL.
pub fn path_sddl(path: &Path) -> std::io::Result<String> {
    to_sddl(path_descriptor(
        path,
        DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION,
    )?)
}

/// Create `dir` (and its missing parents, which inherit as usual) and give
/// it the owner and DACL of `sddl` (`O:` optional, `D:` required), the DACL
/// protected from inheritance, also when it exists already: the
/// machine-wide directories must not keep the ACL `%ProgramData%` hands
/// down, which lets every user create files in them. An existing `dir`
/// that is a reparse point (a junction or symlink someone put there) is
/// refused: the DACL would be set on whatever it points to.
pub fn create_dir_with_sddl(dir: &Path, sddl: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory; remove it and run this again",
            dir.display()
        )));
    }
    secure_path(dir, sddl)
}

/// Give the existing file or directory `path` the owner and DACL of
/// `sddl` (`O:` optional, `D:` required; the DACL protected from
/// inheritance). A reparse point (a junction or symlink someone put
/// there) is refused: the ACL would be set on whatever it points to.
pub fn secure_path(path: &Path, sddl: &str) -> std::io::Result<()> {
    use std::os::windows::fs::MetadataExt;
    const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(std::io::Error::other(format!(
            "{} is a link; remove it and run this again",
            path.display()
        )));
    }
    let descriptor = Descriptor::from_sddl(sddl)?;
    let dacl = descriptor.dacl();
    if dacl.is_null() {
        // A null DACL would give everyone full access.
        return Err(std::io::Error::other(format!("no DACL in {sddl}")));
    }
    let owner = descriptor.owner();
    let mut what = DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION;
    if !owner.is_null() {
        what |= OWNER_SECURITY_INFORMATION;
    }
    let name = wide(path.as_os_str());
    // SAFETY: a NUL-terminated name; the owner and DACL live in
    // `descriptor` for the call.
    let err = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            what,
            owner,
            std::ptr::null_mut(),
            dacl,
            std::ptr::null_mut(),
        )
    };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err as i32));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_gets_the_protected_dacl_it_is_given() {
        let tmp = std::env::temp_dir().join(format!("telemetry-sddl-{}", std::process::id()));
        let dir = tmp.join("state");
        super::create_dir_with_sddl(&dir, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)").unwrap();
        let sddl = super::path_sddl(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        if crate::windows::under_wine() {
            // Wine accepts the DACL and reports a default one: it keeps no
            // file ACLs. Windows itself is where this is checked.
            eprintln!("under wine: file DACLs are not kept ({sddl}); not checked");
            return;
        }
        assert!(sddl.contains("D:P"), "protected: {sddl}");
        assert!(sddl.contains(";;;SY)"), "LocalSystem: {sddl}");
        assert!(sddl.contains(";;;BA)"), "administrators: {sddl}");
        assert!(!sddl.contains(";;;BU)"), "no users: {sddl}");
    }
}
