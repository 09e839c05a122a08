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
    GetSecurityDescriptorDacl, ACL, DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES,
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

/// The owner and DACL of the kernel object `handle` (a pipe), in SDDL.
pub fn handle_sddl(handle: HANDLE) -> std::io::Result<String> {
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-pointers are valid; `sd` is LocalAlloc'd, freed by to_sddl.
    let err = unsafe {
        GetSecurityInfo(
            handle,
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION,
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
    to_sddl(sd)
}

/// The owner and DACL of the file or directory `path`, in SDDL.
pub fn path_sddl(path: &Path) -> std::io::Result<String> {
    let name = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name and valid out-pointers.
    let err = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION,
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
    to_sddl(sd)
}

/// Create `dir` (and its missing parents, which inherit as usual) and give
/// it the DACL of `sddl`, protected from inheritance, also when it exists
/// already: the machine-wide state directory must not keep the readable
/// ACL it would inherit from `%ProgramData%`.
pub fn create_dir_with_sddl(dir: &Path, sddl: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let descriptor = Descriptor::from_sddl(sddl)?;
    let name = wide(dir.as_os_str());
    // SAFETY: a NUL-terminated name; the DACL lives in `descriptor` for
    // the call.
    let err = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            descriptor.dacl(),
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
