//! `docknetctl cluster ...` as a user runs it: bad cluster files are refused before
//! anything is asked of docknetd (exit status 2, one line naming the line and key), no
//! daemon is reported as usual, and `cluster up` waits for a (fake) daemon's cluster to
//! be healthy, or says which members are not.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use docknet_master::cluster::{ClusterSpec, ClusterStatus, MemberRun, MemberStatus, NatMode};
use docknet_master::control::{parse_request, Request, Response, SOCKET_NAME};

/// A temporary folder (removed on drop) with an executable `bin/dn-httpd`.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("dn-cluster-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        let exe = d.join("bin/dn-httpd");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        Tmp(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = r#"name = "web"
vip = "10.88.0.100:80"
replicas = 3
binary = "bin/dn-httpd"
subnet = "10.88.1.0/24"
health = { kind = "http", path = "/", interval_ms = 200 }
"#;

/// `docknetctl --run-dir RUN ARGS` from folder `cwd`.
fn ctl(cwd: &Path, run: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_docknetctl"))
        .current_dir(cwd)
        .arg("--run-dir")
        .arg(run)
        .args(args)
        .output()
        .expect("run docknetctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_files_exit_2_naming_line_and_key() {
    let t = Tmp::new("bad");
    // No daemon: a bad file must be refused before docknetd is asked anything.
    let run = t.0.join("run");
    let cases = [
        (
            GOOD.replace("replicas = 3", "replica = 3"),
            "line 3: unknown key \"replica\" (did you mean \"replicas\"?)",
        ),
        (
            GOOD.replace("replicas = 3", "replicas = 0"),
            "line 3: key \"replicas\": 0 is out of range (1..=250)",
        ),
        (
            GOOD.replace("replicas = 3", "replicas = 6")
                .replace("/24", "/29"),
            "line 3: key \"replicas\": 6 members do not fit in subnet 10.88.1.0/29 (line 5): it has 5 member addresses besides the gateway",
        ),
        (
            GOOD.replace("10.88.0.100:80", "10.88.0.100"),
            "missing key \"ports\": vip (line 2) has no port: write vip = \"10.88.0.100:PORT\", or ports = [\"80\", \"53/udp\"]",
        ),
        (
            GOOD.replace("10.88.0.100:80", "10.88.1.9:80"),
            "line 2: key \"vip\": 10.88.1.9 is inside the member subnet 10.88.1.0/24 (line 5); the VIP must be outside it",
        ),
        (
            GOOD.replace("binary = \"bin/dn-httpd\"", "binary = \"bin/dn-httpd\"\nimage = \"oci\""),
            "line 5: key \"image\": not allowed together with \"binary\" (line 4); give one of them",
        ),
        (
            GOOD.replace("interval_ms = 200", "interval_ms = = 200"),
            "line 6: TOML syntax error:",
        ),
        (
            GOOD.replace("\"http\"", "\"ping\""),
            "line 6: key \"health.kind\": \"ping\" is not one of tcp, http",
        ),
        (
            GOOD.replace("bin/dn-httpd", "bin/missing"),
            "line 4: key \"binary\": ",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let name = format!("c{i}.toml");
        t.write(&name, text);
        let o = ctl(&t.0, &run, &["cluster", "up", &name]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text}\n{err}");
        assert_eq!(err.lines().count(), 1, "not one line: {err}");
        let want = format!("docknetctl: {name}: {want}");
        assert!(err.starts_with(&want), "{text}\n got: {err}\nwant: {want}");
    }
    // The missing binary is named with its absolute path, from the file's folder.
    let o = ctl(
        Path::new("/"),
        &run,
        &["cluster", "up", t.0.join("c8.toml").to_str().unwrap()],
    );
    let err = stderr(&o);
    assert!(
        err.trim_end().ends_with(&format!(
            "{} does not exist",
            t.0.join("bin/missing").display()
        )),
        "{err}"
    );
    // A file that is not there.
    let o = ctl(&t.0, &run, &["cluster", "up", "nope.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("docknetctl: nope.toml: cannot read it: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_daemon_is_reported_as_usual() {
    let t = Tmp::new("nodaemon");
    let run = t.0.join("run");
    t.write("web.toml", GOOD);
    for args in [
        &["cluster", "status", "x"][..],
        &["cluster", "up", "web.toml"],
        &["cluster", "ls"],
        &["cluster", "down", "x"],
    ] {
        let o = ctl(&t.0, &run, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "docknetctl: docknetd is not running on {}",
                run.display()
            )),
            "{args:?}: {err}"
        );
    }
    // Bad arguments are clap's (exit status 2).
    let o = ctl(&t.0, &run, &["cluster", "weight", "web", "web-1", "1001"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn member(name: &str, ip: &str, state: &str, health: &str) -> MemberStatus {
    MemberStatus {
        name: name.into(),
        ip: ip.into(),
        pid: if state == "running" { 4000 } else { 0 },
        state: state.into(),
        health: health.into(),
        weight: 1,
        connections: 7,
        active: 2,
        bytes: 1234,
        restarts: if state == "restarting" { 4 } else { 0 },
    }
}

/// A stand-in for docknetd on `run`: takes `cluster_up` (keeping the spec), and answers
/// the n-th `cluster_status` with the NAT running and members 1..=n healthy, except
/// member 3 when `stuck` (restarting). Its thread ends with the test process.
fn fake_daemon(run: &Path, stuck: bool) -> Arc<Mutex<Option<ClusterSpec>>> {
    std::fs::create_dir_all(run).unwrap();
    let listener = UnixListener::bind(run.join(SOCKET_NAME)).unwrap();
    let got = Arc::new(Mutex::new(None));
    let keep = got.clone();
    let polls = AtomicU32::new(0);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            let answer = match parse_request(&line) {
                Ok(Request::ClusterUp { spec, .. }) => {
                    *keep.lock().unwrap() = Some(spec);
                    Ok(serde_json::json!({}))
                }
                Ok(Request::ClusterStatus { name }) => {
                    let n = polls.fetch_add(1, Ordering::Relaxed) + 1;
                    let members = (1..=3)
                        .map(|i| {
                            let (m, ip) = (format!("{name}-{i}"), format!("10.88.1.{}", i + 1));
                            if stuck && i == 3 {
                                member(&m, &ip, "restarting", "unknown")
                            } else if i <= n {
                                member(&m, &ip, "running", "healthy")
                            } else {
                                member(&m, &ip, "starting", "unknown")
                            }
                        })
                        .collect();
                    Ok(serde_json::to_value(ClusterStatus {
                        name: name.clone(),
                        vip: "10.88.0.100:80".into(),
                        policy: "maglev".into(),
                        mode: NatMode::Dnat,
                        nat: member(&name, "10.88.0.100", "running", "healthy"),
                        members,
                        nat_counters: serde_json::json!({}),
                    })
                    .unwrap())
                }
                other => Err(format!("not in this test: {other:?}")),
            };
            let mut out = serde_json::to_string(&Response::from_result(answer)).unwrap();
            out.push('\n');
            let _ = conn.write_all(out.as_bytes());
        }
    });
    got
}

#[test]
fn up_waits_until_members_are_healthy() {
    let t = Tmp::new("up");
    let run = t.0.join("run");
    let got = fake_daemon(&run, false);
    t.write("web.toml", GOOD);
    let o = ctl(&t.0, &run, &["cluster", "up", "web.toml"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    for n in 1..=3 {
        assert!(
            err.contains(&format!("web: {n}/3 members healthy\n")),
            "{err}"
        );
    }
    assert!(
        out.starts_with("web: vip 10.88.0.100:80, policy maglev, mode dnat\nROLE"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2 + 4, "{out}");
    assert!(out.lines().nth(2).unwrap().starts_with("nat "), "{out}");
    // docknetd got the file's spec, the binary's path made absolute.
    let spec = got.lock().unwrap().clone().expect("no cluster_up");
    assert_eq!(spec.replicas, 3);
    assert_eq!(
        spec.run,
        MemberRun::Binary {
            path: t.0.join("bin/dn-httpd"),
            args: vec![]
        }
    );
}

#[test]
fn up_times_out_naming_the_members_not_ready() {
    let t = Tmp::new("stuck");
    let run = t.0.join("run");
    fake_daemon(&run, true);
    t.write("web.toml", GOOD);
    let o = ctl(
        &t.0,
        &run,
        &["cluster", "up", "web.toml", "--timeout-s", "1"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("docknetctl: web: not ready after 1 s (2/3 members healthy); it stays up as it is: `docknetctl cluster down web` removes it\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "  member web-3 (10.88.1.4): restarting, unknown, no process, restarted 4 times\n"
        ),
        "{err}"
    );
    assert!(!err.contains("web-1 ("), "{err}");
    // --no-wait returns once the daemon took it.
    let o = ctl(&t.0, &run, &["cluster", "up", "web.toml", "--no-wait"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
