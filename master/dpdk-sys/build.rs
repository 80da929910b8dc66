//! Find the system's DPDK with pkg-config, generate bindings with bindgen, and compile the
//! C shim (shim.c) with cc.
//!
//! Without DPDK (no libdpdk-dev, or no libclang for bindgen) this builds an *empty* crate
//! with `cfg(docknet_no_dpdk)` and a `cargo:warning`, so that `cargo build --workspace`
//! works on any machine. With the `required` feature (turned on by docknet-master's `dpdk`
//! feature) a missing DPDK is a build error instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// DPDK 21.11 is the first LTS with the ethdev/mbuf API used here (22.11 is tested).
const MIN_VERSION: &str = "21.11";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(docknet_no_dpdk)");
    for f in ["build.rs", "wrapper.h", "shim.h", "shim.c"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let required = env::var_os("CARGO_FEATURE_REQUIRED").is_some();
    if let Err(why) = build() {
        if required {
            panic!("dpdk-sys: {why}");
        }
        println!("cargo:warning=dpdk-sys: {why}; building without DPDK (the `dpdk` feature of docknet-master needs it)");
        println!("cargo:rustc-cfg=docknet_no_dpdk");
        // Re-probe when DPDK gets installed: watch pkg-config's search directories.
        if let Ok(out) = Command::new(pkg_config_bin())
            .args(["--variable", "pc_path", "pkg-config"])
            .output()
        {
            for dir in String::from_utf8_lossy(&out.stdout).trim().split(':') {
                if std::path::Path::new(dir).is_dir() {
                    println!("cargo:rerun-if-changed={dir}");
                }
            }
        }
    }
}

fn pkg_config_bin() -> String {
    env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into())
}

fn build() -> Result<(), String> {
    // Probe (version check, rerun-if-env-changed lines) without letting the crate emit
    // link lines: DPDK's .pc mixes linker flags we pass on ourselves.
    let lib = pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .cargo_metadata(false)
        .env_metadata(true)
        .probe("libdpdk")
        .map_err(|e| {
            format!(
                "libdpdk >= {MIN_VERSION} not found by pkg-config (apt-get install libdpdk-dev pkg-config): {}",
                // pkg-config's own complaint, e.g. "Package libdpdk was not found ...".
                e.to_string()
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("Package") || l.starts_with("Requested"))
                    .unwrap_or("no details")
            )
        })?;

    // The raw cflags: DPDK needs `-include rte_config.h` and its `-march`, which the
    // pkg-config crate's parsed fields do not carry.
    let out = Command::new(pkg_config_bin())
        .args(["--cflags", "libdpdk"])
        .output()
        .map_err(|e| format!("cannot run pkg-config: {e}"))?;
    if !out.status.success() {
        return Err("pkg-config --cflags libdpdk failed".into());
    }
    let cflags: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let bindings = std::panic::catch_unwind(|| generate_bindings(&cflags)).map_err(|_| {
        "bindgen failed (is libclang installed? apt-get install libclang-dev)".to_string()
    })??;
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .map_err(|e| format!("cannot write bindings: {e}"))?;

    // The shim first, then the shared DPDK libraries that resolve its symbols.
    let mut cc = cc::Build::new();
    cc.file("shim.c").warnings(true);
    for f in &cflags {
        cc.flag(f);
    }
    cc.try_compile("docknet_dpdk_shim")
        .map_err(|e| format!("cannot compile shim.c: {e}"))?;

    // Shared libraries (`pkg-config --libs`, not `--static`: DPDK's static link line needs
    // --whole-archive for its constructor-registered drivers). The PMDs themselves are
    // plugins EAL loads from its driver directory at run time.
    for dir in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for l in &lib.libs {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
    println!("cargo:version={}", lib.version);
    Ok(())
}

fn generate_bindings(cflags: &[String]) -> Result<bindgen::Bindings, String> {
    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(cflags)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        // Only pointers to these cross the FFI boundary: no need for their layout.
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false);
    for f in [
        "rte_eal_init",
        "rte_eal_cleanup",
        "rte_eal_get_runtime_dir",
        "rte_strerror",
        "rte_socket_id",
        "rte_eth_dev_count_avail",
        "rte_eth_dev_info_get",
        "rte_eth_dev_configure",
        "rte_eth_dev_adjust_nb_rx_tx_desc",
        "rte_eth_dev_socket_id",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_close",
        "rte_eth_dev_get_name_by_port",
        "rte_eth_promiscuous_enable",
        "rte_eth_macaddr_get",
        "rte_eth_dev_get_mtu",
        "rte_eth_stats_get",
        "rte_pktmbuf_pool_create",
        "rte_pktmbuf_free_bulk",
        "rte_mempool_free",
        "rte_flow_validate",
        "rte_flow_create",
        "rte_flow_destroy",
        "dn_rte_.*",
    ] {
        b = b.allowlist_function(f);
    }
    for t in [
        "rte_eth_conf",
        "rte_eth_dev_info",
        "rte_eth_stats",
        "rte_ether_addr",
        "rte_flow_attr",
        "rte_flow_item",
        "rte_flow_item_ipv4",
        "rte_flow_action",
        "rte_flow_action_queue",
        "rte_flow_error",
        "rte_flow_item_type",
        "rte_flow_action_type",
    ] {
        b = b.allowlist_type(t);
    }
    for v in [
        "RTE_MAX_ETHPORTS",
        "RTE_PKTMBUF_HEADROOM",
        "RTE_MBUF_DEFAULT_DATAROOM",
        "RTE_ETHER_HDR_LEN",
        "RTE_ETHER_TYPE_IPV4",
        "RTE_ETH_NAME_MAX_LEN",
    ] {
        b = b.allowlist_var(v);
    }
    b.generate().map_err(|e| format!("bindgen: {e}"))
}
