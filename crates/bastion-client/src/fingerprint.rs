//! The machine's stable identifiers, as a certificate binds them (SPEC L3/L4).
//!
//! The identifiers are sent to the server at activation (which keeps only a keyed hash) and
//! hashed into the certificate's binding; they are never logged, and `Debug` only counts them.

use crate::ClientError;

/// A machine's identifiers: the OS's stable machine id plus the OS name.
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    components: Vec<String>,
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprint")
            .field(
                "components",
                &format_args!("[{} redacted]", self.components.len()),
            )
            .finish()
    }
}

impl Fingerprint {
    /// Reads this machine's identifiers: `/etc/machine-id` on Linux (or the D-Bus copy),
    /// `IOPlatformUUID` on macOS, `MachineGuid` on Windows.
    pub fn gather() -> Result<Self, ClientError> {
        let id = os_machine_id()?;
        Ok(Self::from_components(vec![
            format!("os:{}", std::env::consts::OS),
            format!("machine-id:{id}"),
        ]))
    }

    /// A fingerprint from identifiers the app gathered itself (or a test made up).
    pub fn from_components(components: Vec<String>) -> Self {
        Self { components }
    }

    /// The identifiers as sent to the server. Do not log them.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The canonical form the certificate's binding is computed over.
    pub fn canonical(&self) -> Result<String, ClientError> {
        Ok(bastion_crypto::license::canonical_machine(
            &self.components,
        )?)
    }
}

/// The first non-empty file among `paths`, trimmed (Linux machine ids).
#[cfg(any(target_os = "linux", test))]
pub(crate) fn first_machine_id(paths: &[&std::path::Path]) -> Option<String> {
    paths.iter().find_map(|p| {
        let id = std::fs::read_to_string(p).ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_owned())
    })
}

/// `"IOPlatformUUID" = "…"` from `ioreg -rd1 -c IOPlatformExpertDevice`.
#[cfg(any(target_os = "macos", test))]
pub(crate) fn parse_ioreg(out: &str) -> Option<String> {
    let line = out.lines().find(|l| l.contains("\"IOPlatformUUID\""))?;
    let (_, value) = line.split_once('=')?;
    let value = value.trim().trim_matches('"').trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// `MachineGuid    REG_SZ    …` from `reg query HKLM\SOFTWARE\Microsoft\Cryptography`.
#[cfg(any(target_os = "windows", test))]
pub(crate) fn parse_reg_query(out: &str) -> Option<String> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("MachineGuid"))?;
    let mut words = line.split_whitespace();
    let (_, kind, value) = (words.next()?, words.next()?, words.next()?);
    (kind == "REG_SZ" && !value.is_empty()).then(|| value.to_owned())
}

#[cfg(target_os = "linux")]
fn os_machine_id() -> Result<String, ClientError> {
    use std::path::Path;
    first_machine_id(&[
        Path::new("/etc/machine-id"),
        Path::new("/var/lib/dbus/machine-id"),
    ])
    .ok_or(ClientError::Fingerprint("no /etc/machine-id"))
}

#[cfg(any(target_os = "macos", target_os = "windows"))]
fn command_output(program: &str, args: &[&str]) -> Result<String, ClientError> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|_| ClientError::Fingerprint("could not run the system tool"))?;
    if !out.status.success() {
        return Err(ClientError::Fingerprint("the system tool failed"));
    }
    String::from_utf8(out.stdout).map_err(|_| ClientError::Fingerprint("unreadable output"))
}

#[cfg(target_os = "macos")]
fn os_machine_id() -> Result<String, ClientError> {
    let out = command_output("ioreg", &["-rd1", "-c", "IOPlatformExpertDevice"])?;
    parse_ioreg(&out).ok_or(ClientError::Fingerprint("no IOPlatformUUID"))
}

#[cfg(target_os = "windows")]
fn os_machine_id() -> Result<String, ClientError> {
    let out = command_output(
        "reg",
        &[
            "query",
            r"HKLM\SOFTWARE\Microsoft\Cryptography",
            "/v",
            "MachineGuid",
        ],
    )?;
    parse_reg_query(&out).ok_or(ClientError::Fingerprint("no MachineGuid"))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn os_machine_id() -> Result<String, ClientError> {
    Err(ClientError::Fingerprint("unsupported operating system"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn macos_and_windows_tool_output_is_parsed() {
        let ioreg = "+-o J314sAP  <class IOPlatformExpertDevice>\n    {\n      \"IOPlatformSerialNumber\" = \"C02XYZ\"\n      \"IOPlatformUUID\" = \"1B2C3D4E-0000-1111-2222-333344445555\"\n    }\n";
        assert_eq!(
            parse_ioreg(ioreg).as_deref(),
            Some("1B2C3D4E-0000-1111-2222-333344445555")
        );
        assert_eq!(parse_ioreg("\"IOPlatformUUID\" = \"\""), None);
        let reg = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography\r\n    MachineGuid    REG_SZ    6a1b2c3d-aaaa-bbbb-cccc-0123456789ab\r\n\r\n";
        assert_eq!(
            parse_reg_query(reg).as_deref(),
            Some("6a1b2c3d-aaaa-bbbb-cccc-0123456789ab")
        );
        assert_eq!(parse_reg_query("ERROR: not found"), None);
    }

    #[test]
    fn linux_machine_id_falls_back_to_the_dbus_copy() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("machine-id");
        let dbus = dir.path().join("dbus-machine-id");
        std::fs::write(&empty, "\n").unwrap();
        std::fs::write(&dbus, "0123abcd\n").unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            first_machine_id(&[&missing, &empty, &dbus]).as_deref(),
            Some("0123abcd")
        );
        assert_eq!(first_machine_id(&[&missing, &empty]), None);
    }

    #[test]
    fn debug_never_shows_the_identifiers() {
        let fp = Fingerprint::from_components(vec!["secret-machine-id".into()]);
        let shown = format!("{fp:?}");
        assert!(!shown.contains("secret-machine-id"), "{shown}");
        assert!(shown.contains("1 redacted"), "{shown}");
    }
}
