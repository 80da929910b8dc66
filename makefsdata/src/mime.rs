//! File-extension → media type table.

/// A media type as served, and whether it is worth compressing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mime {
    /// The full `Content-Type` value, e.g. `text/html; charset=utf-8`.
    pub content_type: &'static str,
    /// `false` for formats that are already compressed (raster images, woff/woff2,
    /// archives, audio, video): no gzip/brotli variant is even attempted for them.
    pub compressible: bool,
}

/// Served for unknown extensions and files without an extension.
pub const OCTET_STREAM: Mime = Mime {
    content_type: "application/octet-stream",
    compressible: false,
};

const fn c(content_type: &'static str) -> Mime {
    Mime {
        content_type,
        compressible: true,
    }
}

const fn n(content_type: &'static str) -> Mime {
    Mime {
        content_type,
        compressible: false,
    }
}

/// Sorted by extension (lower case) for binary search; a unit test checks the order.
static TABLE: &[(&str, Mime)] = &[
    ("3g2", n("video/3gpp2")),
    ("3gp", n("video/3gpp")),
    ("7z", n("application/x-7z-compressed")),
    ("aac", n("audio/aac")),
    ("apng", n("image/apng")),
    ("atom", c("application/atom+xml; charset=utf-8")),
    ("avi", n("video/x-msvideo")),
    ("avif", n("image/avif")),
    ("bin", n("application/octet-stream")),
    ("bmp", c("image/bmp")),
    ("br", n("application/x-brotli")),
    ("bz2", n("application/x-bzip2")),
    ("cjs", c("text/javascript; charset=utf-8")),
    ("css", c("text/css; charset=utf-8")),
    ("csv", c("text/csv; charset=utf-8")),
    ("eot", c("application/vnd.ms-fontobject")),
    ("epub", n("application/epub+zip")),
    ("flac", n("audio/flac")),
    ("geojson", c("application/geo+json; charset=utf-8")),
    ("gif", n("image/gif")),
    ("gz", n("application/gzip")),
    ("heic", n("image/heic")),
    ("heif", n("image/heif")),
    ("htm", c("text/html; charset=utf-8")),
    ("html", c("text/html; charset=utf-8")),
    ("ico", c("image/x-icon")),
    ("ics", c("text/calendar; charset=utf-8")),
    ("jar", n("application/java-archive")),
    ("jpeg", n("image/jpeg")),
    ("jpg", n("image/jpeg")),
    ("js", c("text/javascript; charset=utf-8")),
    ("json", c("application/json; charset=utf-8")),
    ("jsonld", c("application/ld+json; charset=utf-8")),
    ("jxl", n("image/jxl")),
    ("m4a", n("audio/mp4")),
    ("m4v", n("video/mp4")),
    ("map", c("application/json; charset=utf-8")),
    ("markdown", c("text/markdown; charset=utf-8")),
    ("md", c("text/markdown; charset=utf-8")),
    ("mid", n("audio/midi")),
    ("midi", n("audio/midi")),
    ("mjs", c("text/javascript; charset=utf-8")),
    ("mkv", n("video/x-matroska")),
    ("mov", n("video/quicktime")),
    ("mp3", n("audio/mpeg")),
    ("mp4", n("video/mp4")),
    ("mpeg", n("video/mpeg")),
    ("oga", n("audio/ogg")),
    ("ogg", n("audio/ogg")),
    ("ogv", n("video/ogg")),
    ("opus", n("audio/opus")),
    ("otf", c("font/otf")),
    ("pdf", n("application/pdf")),
    ("png", n("image/png")),
    ("rar", n("application/vnd.rar")),
    ("rss", c("application/rss+xml; charset=utf-8")),
    ("rtf", c("application/rtf")),
    ("svg", c("image/svg+xml")),
    ("svgz", n("image/svg+xml")),
    ("tar", c("application/x-tar")),
    ("tgz", n("application/gzip")),
    ("tif", n("image/tiff")),
    ("tiff", n("image/tiff")),
    ("toml", c("application/toml; charset=utf-8")),
    ("ts", n("video/mp2t")),
    ("tsv", c("text/tab-separated-values; charset=utf-8")),
    ("ttf", c("font/ttf")),
    ("txt", c("text/plain; charset=utf-8")),
    ("vtt", c("text/vtt; charset=utf-8")),
    ("wasm", c("application/wasm")),
    ("wav", c("audio/wav")),
    ("weba", n("audio/webm")),
    ("webm", n("video/webm")),
    ("webmanifest", c("application/manifest+json; charset=utf-8")),
    ("webp", n("image/webp")),
    ("woff", n("font/woff")),
    ("woff2", n("font/woff2")),
    ("xhtml", c("application/xhtml+xml; charset=utf-8")),
    ("xml", c("application/xml; charset=utf-8")),
    ("xsl", c("application/xslt+xml; charset=utf-8")),
    ("xz", n("application/x-xz")),
    ("yaml", c("application/yaml; charset=utf-8")),
    ("yml", c("application/yaml; charset=utf-8")),
    ("zip", n("application/zip")),
    ("zst", n("application/zstd")),
];

/// The media type for a file name or path, by its extension (case-insensitive).
/// Unknown extensions and names without one give [`OCTET_STREAM`].
pub fn mime_for(name: &str) -> Mime {
    let base = name.rsplit('/').next().unwrap_or(name);
    let Some((stem, ext)) = base.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    if stem.is_empty() || ext.is_empty() || ext.len() > 16 {
        // ".htaccess" has no extension; "file." neither.
        return OCTET_STREAM;
    }
    let ext = ext.to_ascii_lowercase();
    match TABLE.binary_search_by(|(e, _)| (*e).cmp(ext.as_str())) {
        Ok(i) => TABLE[i].1,
        Err(_) => OCTET_STREAM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn lookups() {
        let ct = |p| mime_for(p).content_type;
        assert_eq!(ct("index.html"), "text/html; charset=utf-8");
        assert_eq!(ct("/a/b/INDEX.HTM"), "text/html; charset=utf-8");
        assert_eq!(ct("style.css"), "text/css; charset=utf-8");
        assert_eq!(ct("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(ct("mod.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(ct("data.json"), "application/json; charset=utf-8");
        assert_eq!(ct("logo.svg"), "image/svg+xml");
        assert_eq!(ct("a.png"), "image/png");
        assert_eq!(ct("a.JPG"), "image/jpeg");
        assert_eq!(ct("a.webp"), "image/webp");
        assert_eq!(ct("a.avif"), "image/avif");
        assert_eq!(ct("favicon.ico"), "image/x-icon");
        assert_eq!(ct("f.woff2"), "font/woff2");
        assert_eq!(ct("f.ttf"), "font/ttf");
        assert_eq!(ct("x.wasm"), "application/wasm");
        assert_eq!(ct("app.js.map"), "application/json; charset=utf-8");
        assert_eq!(
            ct("site.webmanifest"),
            "application/manifest+json; charset=utf-8"
        );
        assert_eq!(ct("v.mp4"), "video/mp4");
        assert_eq!(ct("a.mp3"), "audio/mpeg");
        assert_eq!(ct("t.csv"), "text/csv; charset=utf-8");
        assert_eq!(ct("README.md"), "text/markdown; charset=utf-8");
        assert_eq!(ct("README"), "application/octet-stream");
        assert_eq!(ct(".htaccess"), "application/octet-stream");
        assert_eq!(ct("file."), "application/octet-stream");
        assert_eq!(ct("x.unknownext"), "application/octet-stream");
        assert_eq!(ct("dir.d/noext"), "application/octet-stream");
    }

    #[test]
    fn compressibility() {
        for p in [
            "a.html", "a.css", "a.js", "a.svg", "a.json", "a.wasm", "a.ttf",
        ] {
            assert!(mime_for(p).compressible, "{p}");
        }
        for p in [
            "a.png", "a.jpg", "a.gif", "a.webp", "a.avif", "a.woff", "a.woff2", "a.zip", "a.gz",
            "a.mp4", "a.mp3", "a.ogg", "a.bin", "noext",
        ] {
            assert!(!mime_for(p).compressible, "{p}");
        }
    }
}
