//! Just enough ELF reading to name the image's architecture after the binary (not the
//! build host) and to warn when a binary needs a dynamic loader that a `FROM scratch`
//! image does not have.

/// What the ELF header and program headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// GOARCH-style architecture, if the machine is one we know.
    pub architecture: Option<&'static str>,
    /// The binary has a `PT_INTERP` program header (needs a dynamic loader).
    pub dynamic: bool,
}

const PT_INTERP: u32 = 3;

/// Reads the ELF header of `bytes`; `None` if it is not an ELF file (or is truncated).
pub fn inspect(bytes: &[u8]) -> Option<ElfInfo> {
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = match bytes[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match bytes[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |off: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(off..off + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |off: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(off..off + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |off: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(off..off + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let machine = u16_at(18)?;
    let architecture = match (machine, is64, le) {
        (62, true, _) => Some("amd64"),
        (3, false, _) => Some("386"),
        (183, true, _) => Some("arm64"),
        (40, false, _) => Some("arm"),
        (243, true, _) => Some("riscv64"),
        (21, true, true) => Some("ppc64le"),
        (21, true, false) => Some("ppc64"),
        (22, true, _) => Some("s390x"),
        (258, true, _) => Some("loong64"),
        (8, false, _) => Some("mips"),
        (8, true, _) => Some("mips64"),
        _ => None,
    };
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(32)?, u16_at(54)?, u16_at(56)?)
    } else {
        (u64::from(u32_at(28)?), u16_at(42)?, u16_at(44)?)
    };
    let mut dynamic = false;
    for i in 0..u64::from(phnum) {
        let Some(off) = phoff.checked_add(i * u64::from(phentsize)) else {
            break;
        };
        let Ok(off) = usize::try_from(off) else {
            break;
        };
        match u32_at(off) {
            Some(PT_INTERP) => {
                dynamic = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    Some(ElfInfo {
        architecture,
        dynamic,
    })
}

/// The build host's architecture, GOARCH-style.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        "mips" => "mips",
        "mips64" => "mips64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf() {
        assert_eq!(inspect(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(inspect(&[0u8; 100]), None);
    }

    #[test]
    fn own_test_binary_is_elf_of_host_arch() {
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        let info = inspect(&bytes).expect("test binary is ELF");
        assert_eq!(info.architecture, Some(host_architecture()));
    }

    #[test]
    fn truncated_program_headers_do_not_panic() {
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        for len in [52, 64, 100, 200] {
            let _ = inspect(&bytes[..len]);
        }
    }
}
