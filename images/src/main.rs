//! `docknet-image` CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use docknet_image::{bundle, image, BuildOptions, BundleOptions};

/// Pack a static DockNet service binary into a reproducible FROM-scratch OCI image, and
/// turn an image into a runc bundle with its DockPipe mounted.
#[derive(Parser, Debug)]
#[command(name = "docknet-image", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write an OCI image layout holding only the binary and its pipe mount point.
    ///
    /// The image is reproducible: the same binary, tag, ports and SOURCE_DATE_EPOCH give
    /// byte-identical blobs and the same manifest digest. If --out already holds an OCI
    /// layout, the image is added to it under --tag (an older image with that tag is
    /// replaced in index.json; its blobs stay until `umoci gc --layout DIR`).
    #[command(
        after_help = "Example:\n  docknet-image build --binary target/release/dn-httpd \
        --tag dn-httpd:latest --out images/dn-httpd --port 80\n  \
        skopeo inspect oci:images/dn-httpd:dn-httpd:latest"
    )]
    Build {
        /// The static binary to pack (placed at /<name> in the image, mode 0755, root:root).
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// Name written as org.opencontainers.image.ref.name in index.json.
        #[arg(long, value_name = "NAME:TAG")]
        tag: String,
        /// Layout directory to write (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Port to list in ExposedPorts (N, N/tcp, N/udp); repeatable; default 80.
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<String>,
        /// Expose no ports at all.
        #[arg(long, conflicts_with = "ports")]
        no_port: bool,
        /// File name of the binary inside the image [default: the binary's file name].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Timestamp for file mtimes and `created` [default: $SOURCE_DATE_EPOCH, else 0].
        #[arg(long, value_name = "SECONDS")]
        source_date_epoch: Option<u64>,
        /// Image architecture [default: from the binary's ELF header, else the build host].
        #[arg(long, value_name = "GOARCH")]
        arch: Option<String>,
        /// Print nothing on success.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Unpack an image into a runc bundle with a pipe mounted at /run/docknet/pipe.
    ///
    /// config.json bind-mounts PIPE_DIR at /run/docknet/pipe (rbind, rw, rprivate) in the
    /// container's own mount namespace only. The container gets new mount, pid, ipc, uts, cgroup and network namespaces (the
    /// service needs no network: it talks through its pipe's shared memory), no
    /// capabilities, noNewPrivileges and a read-only root file system. Run it with
    /// `runc run --bundle BUNDLE ID`. Without --pipe the mount point stays empty.
    #[command(
        after_help = "Example:\n  docknet-image runc-bundle --image images/dn-httpd \
        --tag dn-httpd:latest --pipe /run/docknet/pipes/web --out /tmp/web -- --work-us 10\n  \
        runc run --bundle /tmp/web web"
    )]
    RuncBundle {
        /// OCI image layout directory.
        #[arg(long, value_name = "DIR")]
        image: PathBuf,
        /// Which image of the layout [default: the only one].
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
        /// Pipe directory on the host to mount at /run/docknet/pipe.
        #[arg(long, value_name = "PIPE_DIR")]
        pipe: Option<PathBuf>,
        /// Bundle directory to create (must not exist or be empty).
        #[arg(long, value_name = "BUNDLE")]
        out: PathBuf,
        /// Hostname inside the container.
        #[arg(long, default_value = "docknet")]
        hostname: String,
        /// Extra environment KEY=value (repeatable; overrides the image's).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Numeric UID[:GID] to run as [default: the image's User, else 0:0].
        #[arg(long, value_name = "UID[:GID]")]
        user: Option<String>,
        /// Print nothing on success.
        #[arg(long, short)]
        quiet: bool,
        /// Arguments after the entrypoint (replace the image's Cmd).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

fn run(cli: Cli) -> docknet_image::Result<()> {
    match cli.command {
        Command::Build {
            binary,
            tag,
            out,
            ports,
            no_port,
            name,
            source_date_epoch,
            arch,
            quiet,
        } => {
            let source_date_epoch = match source_date_epoch {
                Some(s) => s,
                None => image::source_date_epoch_from_env()?,
            };
            let ports = if no_port {
                Vec::new()
            } else if ports.is_empty() {
                vec!["80".to_string()]
            } else {
                ports
            };
            let report = docknet_image::build(&BuildOptions {
                binary,
                tag: tag.clone(),
                out: out.clone(),
                ports,
                name,
                source_date_epoch,
                architecture: arch,
            })?;
            for w in &report.warnings {
                eprintln!("docknet-image: warning: {w}");
            }
            if !quiet {
                println!(
                    "{tag} -> {}: manifest {} ({} {}); layer {} B gzip ({} B tar), \
                     binary {} B, layout {} B, overhead {:+} B on disk, {} B uncompressed",
                    out.display(),
                    report.manifest_digest,
                    report.architecture,
                    report.entrypoint,
                    report.layer_size,
                    report.layer_tar_size,
                    report.binary_size,
                    report.blob_bytes() + report.layout_files_size,
                    report.overhead_on_disk(),
                    report.overhead_uncompressed(),
                );
            }
            Ok(())
        }
        Command::RuncBundle {
            image,
            tag,
            pipe,
            out,
            hostname,
            env,
            user,
            quiet,
            args,
        } => {
            let report = bundle::runc_bundle(&BundleOptions {
                image,
                tag,
                pipe,
                out: out.clone(),
                hostname,
                env,
                user,
                args,
            })?;
            if !quiet {
                println!(
                    "bundle {} from {}: args {:?}, pipe {}; run: runc run --bundle {} ID",
                    out.display(),
                    report.manifest_digest,
                    report.args,
                    report
                        .pipe
                        .as_ref()
                        .map(|p| format!("{} -> /run/docknet/pipe", p.display()))
                        .unwrap_or_else(|| "none".into()),
                    out.display(),
                );
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docknet-image: error: {e}");
            ExitCode::FAILURE
        }
    }
}
