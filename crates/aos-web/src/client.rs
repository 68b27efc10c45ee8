//! The web client: plain HTML, CSS and ES modules from `crates/aos-web/client`, embedded in the
//! binary at build time (no JavaScript build step, nothing fetched at run time). `index.html` is
//! served at `/`, every other file at `/ui/<path>`; the client routes with `#/...` so the only
//! other page address is `/api/docs`, which renders the API's OpenAPI document.

use include_dir::{Dir, include_dir};
use ntex::http::StatusCode;
use ntex::web::{self, HttpRequest, HttpResponse};

static CLIENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/client");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/api/docs", web::get().to(api_docs))
        .route("/favicon.ico", web::get().to(no_icon))
        .route("/ui/{path}*", web::get().to(file));
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        // Browsers load module scripts only with a JavaScript type.
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str) -> HttpResponse {
    match CLIENT.get_file(path) {
        Some(found) => HttpResponse::Ok()
            .content_type(content_type(path))
            // A new binary's client is picked up at once (the files are small).
            .header("cache-control", "no-cache")
            .body(found.contents()),
        None => HttpResponse::build(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .body(format!("no such file of the web client: {path}")),
    }
}

async fn index() -> HttpResponse {
    serve("index.html")
}

/// The API's documentation page (it reads `/api/openapi.json`, which needs no sign-in).
async fn api_docs() -> HttpResponse {
    serve("api-docs.html")
}

/// Browsers ask for it on their own; the client has none (and a 404 would be logged as an error).
async fn no_icon() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

async fn file(req: HttpRequest) -> HttpResponse {
    let path = req.match_info().query("path");
    // include_dir paths are plain relative names: `..` or a leading `/` match nothing.
    serve(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_embedded_whole() {
        let index = CLIENT.get_file("index.html").expect("index.html");
        let text = index.contents_utf8().expect("utf-8");
        assert!(text.contains("/ui/app.js"));
        for module in [
            "app.js",
            "api.js",
            "live.js",
            "charts.js",
            "pages/device.js",
            "api-docs.js",
        ] {
            assert!(CLIENT.get_file(module).is_some(), "{module} is embedded");
        }
        assert!(content_type("pages/device.js").starts_with("text/javascript"));
        let docs = CLIENT.get_file("api-docs.html").expect("api-docs.html");
        let text = docs.contents_utf8().expect("utf-8");
        assert!(text.contains("/ui/api-docs.js"));
    }
}
