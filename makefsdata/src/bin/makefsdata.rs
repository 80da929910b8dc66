//! `makefsdata DIR -o OUT.rs`: compile a directory of web content into a Rust module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use makefsdata::{Options, Site};

/// Turn a directory into a Rust module with pre-built HTTP/1.1 responses.
///
/// Writes OUT.rs and, beside it, OUT.bin (the bodies, pulled in with include_bytes!),
/// unless --inline. Last-Modified comes from file mtimes, or from SOURCE_DATE_EPOCH
/// (seconds since 1970) for all files when it is set.
#[derive(Parser, Debug)]
#[command(name = "makefsdata", version)]
struct Args {
    /// The site's root directory.
    dir: PathBuf,
    /// The Rust file to write.
    #[arg(short, long, value_name = "OUT.rs")]
    output: PathBuf,
    /// Include files and directories whose names start with '.'.
    #[arg(long)]
    include_hidden: bool,
    /// Embed bodies as byte-string literals in OUT.rs (one self-contained file).
    #[arg(long)]
    inline: bool,
    /// Do not make gzip variants.
    #[arg(long)]
    no_gzip: bool,
    /// Do not make brotli variants.
    #[arg(long)]
    no_brotli: bool,
    /// Print nothing on success.
    #[arg(short, long)]
    quiet: bool,
}

fn run(args: &Args) -> Result<String, Box<dyn std::error::Error>> {
    let mut opts = Options::from_env()?;
    opts.include_hidden = args.include_hidden;
    opts.gzip &= !args.no_gzip;
    opts.brotli &= !args.no_brotli;
    let site = Site::scan_with(&args.dir, &opts)?;
    let written = if args.inline {
        let mut v = Vec::new();
        site.write_rust(&mut v)?;
        std::fs::write(&args.output, v)
            .map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
        args.output.display().to_string()
    } else {
        let blob = site.write_files(&args.output)?;
        format!("{} + {}", args.output.display(), blob.display())
    };
    Ok(format!("makefsdata: {} -> {written}", site.stats()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(summary) => {
            if !args.quiet {
                eprintln!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("makefsdata: error: {e}");
            ExitCode::FAILURE
        }
    }
}
