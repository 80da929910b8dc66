//! `docknet-cni`: run by a container runtime with `CNI_*` environment variables and the
//! network configuration on stdin; the result (or a CNI error object) on stdout, logs on
//! stderr (`RUST_LOG`, default `warn`).

use std::io::{Read, Write};

use docknet_cni::protocol::CniEnv;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    let command = std::env::var("CNI_COMMAND").ok().filter(|c| !c.is_empty());
    let env = CniEnv::from_process();
    let mut buf = Vec::new();
    let stdin = std::io::stdin().read_to_end(&mut buf).map(|_| buf);
    let out = docknet_cni::main_with(command.as_deref(), &env, stdin);
    if let Some(v) = out.stdout {
        let mut so = std::io::stdout().lock();
        let written = serde_json::to_writer(&mut so, &v)
            .map_err(std::io::Error::from)
            .and_then(|()| so.write_all(b"\n"))
            .and_then(|()| so.flush());
        if let Err(e) = written {
            log::error!("cannot write the result to stdout: {e}");
            std::process::exit(1);
        }
    }
    std::process::exit(out.status);
}
