//! The dashboard page at `/`: static files compiled into the binary.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | `assets/index.html` |
//! | `GET /assets/{file}` | `app.js`, `style.css` (404 for anything else) |
//!
//! The page is plain HTML, CSS and JavaScript with no build step and nothing fetched
//! from the network: it talks only to this server (`/v1/tables`, `/v1/sql`,
//! `/v1/live`). Its browser test is `web/tests/browser/run.sh`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Every asset: its name, content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../assets/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../assets/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../assets/favicon.svg")),
];

/// The headers every page response carries: no caching across upgrades of the binary,
/// and a content security policy that allows only this origin.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'";

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such asset\n")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_page_and_its_assets_with_content_types() {
        let r = index().await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        for (name, ct) in [("app.js", "text/javascript; charset=utf-8"), ("style.css", "text/css; charset=utf-8")] {
            let r = asset(Path(name.to_string())).await;
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
        }
        assert_eq!(asset(Path("../Cargo.toml".to_string())).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(asset(Path("nope.js".to_string())).await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_references_only_local_assets() {
        assert!(INDEX_HTML.contains("/assets/app.js") && INDEX_HTML.contains("/assets/style.css"));
        for (name, _, bytes) in ASSETS {
            // The SVG namespace is a name, not something fetched.
            let text = String::from_utf8_lossy(bytes).replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("https://") && !text.contains("http://"), "{name} refers to the network");
        }
        assert!(!INDEX_HTML.contains("https://") && !INDEX_HTML.contains("http://"));
    }
}
