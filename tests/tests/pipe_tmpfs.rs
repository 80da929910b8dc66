//! The tmpfs docknetd mounts for the pipe files: 2 MiB pages where the kernel offers them
//! for tmpfs (`huge=within_size`), plain pages where it does not.

use std::path::Path;
use std::time::Duration;

use docknet_tests::Daemon;

/// The mount options of the mount at `dir`, from `/proc/self/mountinfo`.
fn mount_options(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    // Fields: id parent major:minor root mount-point mount-options ... - fstype source
    // super-options. The tmpfs's own options (`huge=`) are the super options.
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|&f| f == "-")?;
        (Path::new(fields.get(4)?) == dir && fields.get(dash + 1) == Some(&"tmpfs"))
            .then(|| fields.get(dash + 3).unwrap_or(&"").to_string())
    })
}

#[test]
fn pipe_files_sit_on_a_tmpfs_with_huge_pages_where_the_kernel_has_them() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.ctl_ok(&["fc", "create", "a", "b"]);
    let pipes = d.run_dir.join("pipes");
    let Some(options) = mount_options(&pipes) else {
        // docknetd mounts none when the run directory is on a tmpfs already.
        eprintln!(
            "SKIP: docknetd mounted no tmpfs of its own on {} (its parent is on tmpfs)",
            pipes.display()
        );
        return;
    };
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    match thp {
        Ok(modes) => assert!(
            options.split(',').any(|o| o == "huge=within_size"),
            "the kernel has huge pages for tmpfs ({}), but the pipe tmpfs is mounted with {options}",
            modes.trim()
        ),
        Err(e) => {
            eprintln!("no transparent huge pages here ({e}): the pipe tmpfs has plain pages");
            assert!(!options.contains("huge="), "{options}");
        }
    }
    // The files on it work: a fast-channel echo.
    let _server = d.echo_server("a", 7);
    let out = d.echo_client(
        "b",
        &["--to", "10.88.0.2:7", "--size", "1048576", "--count", "4"],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "echo over the fast channel failed: {out:?}"
    );
}
