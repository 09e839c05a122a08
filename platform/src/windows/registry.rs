//! The registry: the machine's identity, and the per-user `Run` value that
//! starts the daemon at logon.

use super::wide;
use std::ffi::{c_void, OsStr};
use windows_sys::Win32::System::Registry::{
    RegDeleteKeyValueW, RegGetValueW, RegSetKeyValueW, HKEY, HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE,
    REG_SZ, RRF_RT_REG_SZ,
};

/// The key whose values Windows runs at each logon of this user.
pub const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";

/// A `REG_SZ` value, if it exists and is text.
fn get_string(root: HKEY, key: &str, value: &str) -> Option<String> {
    let key = wide(OsStr::new(key));
    let value = wide(OsStr::new(value));
    let mut len = 0u32;
    // SAFETY: NUL-terminated names; the first call only sizes the value.
    let err = unsafe {
        RegGetValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut len,
        )
    };
    if err != 0 {
        return None;
    }
    let mut buf = vec![0u16; (len as usize).div_ceil(2).max(1)];
    let mut len = (buf.len() * 2) as u32;
    // SAFETY: `buf` and `len` describe a valid buffer.
    let err = unsafe {
        RegGetValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            buf.as_mut_ptr() as *mut c_void,
            &mut len,
        )
    };
    if err != 0 {
        return None;
    }
    let chars = (len as usize / 2).min(buf.len());
    let text = String::from_utf16_lossy(&buf[..chars]);
    Some(text.trim_end_matches('\0').to_string())
}

/// The machine's `MachineGuid` from the registry
/// (`HKLM\SOFTWARE\Microsoft\Cryptography`), if it can be read.
pub fn machine_guid() -> Option<String> {
    let text = get_string(
        HKEY_LOCAL_MACHINE,
        r"SOFTWARE\Microsoft\Cryptography",
        "MachineGuid",
    )?;
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// This user's logon command named `name`, if set.
pub fn run_value(name: &str) -> Option<String> {
    get_string(HKEY_CURRENT_USER, RUN_KEY, name)
}

/// Run `command` at each logon of this user, under `name`.
pub fn set_run_value(name: &str, command: &str) -> std::io::Result<()> {
    let key = wide(OsStr::new(RUN_KEY));
    let value = wide(OsStr::new(name));
    let data = wide(OsStr::new(command));
    // SAFETY: NUL-terminated names; `data` is a NUL-terminated REG_SZ of
    // the given byte length.
    let err = unsafe {
        RegSetKeyValueW(
            HKEY_CURRENT_USER,
            key.as_ptr(),
            value.as_ptr(),
            REG_SZ,
            data.as_ptr() as *const c_void,
            (data.len() * 2) as u32,
        )
    };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err as i32));
    }
    Ok(())
}

/// Stop running `name` at logon. Whether there was such a value.
pub fn delete_run_value(name: &str) -> std::io::Result<bool> {
    let key = wide(OsStr::new(RUN_KEY));
    let value = wide(OsStr::new(name));
    // SAFETY: NUL-terminated names.
    let err = unsafe { RegDeleteKeyValueW(HKEY_CURRENT_USER, key.as_ptr(), value.as_ptr()) };
    match err {
        0 => Ok(true),
        2 /* ERROR_FILE_NOT_FOUND */ => Ok(false),
        e => Err(std::io::Error::from_raw_os_error(e as i32)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_guid_is_read_from_the_registry() {
        let guid = super::machine_guid().expect("MachineGuid");
        assert_eq!(guid.len(), 36, "{guid}");
        assert_eq!(guid.matches('-').count(), 4, "{guid}");
    }

    #[test]
    fn a_run_value_is_set_read_and_deleted() {
        let name = format!("telemetryd-test-{}", std::process::id());
        let command = r#""C:\Program Files\telemetry\telemetryd.exe" --autostarted"#;
        super::set_run_value(&name, command).unwrap();
        assert_eq!(super::run_value(&name).as_deref(), Some(command));
        assert!(super::delete_run_value(&name).unwrap());
        assert_eq!(super::run_value(&name), None);
        assert!(!super::delete_run_value(&name).unwrap(), "already gone");
    }
}
