//! The process entry of a service: `docknet::main!(app)`.
//!
//! The libOS owns `main`: it sets up logging, attaches the pipe named by `DOCKNET_PIPE`
//! (a start-up failure — no pipe, wrong ABI version, pipe already attached — is one line
//! on stderr and exit code 2), then calls the app with the engine. The app returns `Ok`
//! (exit 0) or an error (one line, exit 1). SIGTERM/SIGINT end `Engine::run` with the
//! connections closed cleanly; a pipe removed by docknetd ends it too (exit 1).

use crate::engine::{Engine, EngineConfig};

/// What an app's entry returns.
pub type AppResult = Result<(), Box<dyn std::error::Error>>;

/// Run `app` as the service's main; returns the process exit code.
pub fn start(
    name: &str,
    config: impl FnOnce(&mut EngineConfig),
    app: impl FnOnce(&mut Engine) -> AppResult,
) -> i32 {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let mut cfg = match EngineConfig::try_from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return 2;
        }
    };
    config(&mut cfg);
    let mut engine = match Engine::attach(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{name}: {e}");
            return 2;
        }
    };
    let result = app(&mut engine);
    if let Some((dropped, received)) = engine.device().injected_loss() {
        eprintln!(
            "{name}: injected loss ({}): dropped {dropped} of {received} received frames",
            crate::fault::DROP_ENV
        );
    }
    let r = engine.tcp_retransmit_stats();
    let all = r.timeouts
        + r.fast_retransmits
        + r.partial_ack_retransmits
        + r.lost_retransmits
        + r.tail_probes;
    if all > 0 {
        eprintln!(
            "{name}: tcp retransmissions: {} timeouts, {} fast retransmits, {} partial-ack resends, {} resends of lost resends, {} tail probes",
            r.timeouts, r.fast_retransmits, r.partial_ack_retransmits, r.lost_retransmits, r.tail_probes
        );
    }
    let st = engine.device().stats;
    if st.tx_no_buffer + st.rx_syn_dropped + st.tx_app_no_buffer > 0 {
        eprintln!(
            "{name}: frames dropped: {} sent with no free buffer or ring slot, {} forwarded with none, {} connection requests with no listening socket free",
            st.tx_no_buffer, st.tx_app_no_buffer, st.rx_syn_dropped
        );
    }
    if st.tx_fc_detours > 0 {
        eprintln!(
            "{name}: {} frames for fast-channel peers went through docknetd (the channel had no free buffer of their size)",
            st.tx_fc_detours
        );
    }
    let spoofed = st.rx_fc_spoofed;
    if spoofed > 0 {
        eprintln!("{name}: dropped {spoofed} fast-channel frames whose source was not the peer");
    }
    if engine.pipe_removed() {
        if engine.device().pipe_broken() {
            eprintln!(
                "{name}: the pipe file in {} was truncated; this service can no longer use it",
                engine.pipe_dir().display()
            );
        } else {
            eprintln!(
                "{name}: docknetd removed the pipe {}",
                engine.pipe_dir().display()
            );
        }
        return 1;
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}

/// Declare a service's entry: `docknet::main!(app)` with `fn app(engine: &mut Engine) ->
/// docknet::runtime::AppResult`, or `docknet::main!(app, |cfg| cfg.tcp_rx_buffer = 1 << 20)`
/// to adjust the engine configuration first.
#[macro_export]
macro_rules! main {
    ($app:path) => {
        fn main() {
            std::process::exit($crate::runtime::start(env!("CARGO_PKG_NAME"), |_| {}, $app));
        }
    };
    ($app:path, $config:expr) => {
        fn main() {
            std::process::exit($crate::runtime::start(
                env!("CARGO_PKG_NAME"),
                $config,
                $app,
            ));
        }
    };
}
