//! Compile the site into the binary: `DN_HTTPD_SITE=DIR` (default: makefsdata's sample
//! site). Set SOURCE_DATE_EPOCH for reproducible Last-Modified headers.
fn main() {
    println!("cargo:rerun-if-env-changed=DN_HTTPD_SITE");
    let site = std::env::var("DN_HTTPD_SITE").unwrap_or_else(|_| {
        format!(
            "{}/../../makefsdata/sample-site",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")
        )
    });
    let out =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets it")).join("site.rs");
    if let Err(e) = makefsdata::build(&site, &out) {
        panic!("dn-httpd: cannot compile the site {site}: {e}");
    }
}
