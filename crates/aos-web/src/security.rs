//! What every HTTP answer carries for the browser's protection (a strict Content Security
//! Policy: the web client runs only its own files; no sniffing; no framing; no referrer), and
//! CORS: closed unless `web.cors_origins` names the origins other sites' pages may call the API
//! from.

use std::sync::Arc;

use ntex::http::Method;
use ntex::http::header::{HeaderName, HeaderValue};
use ntex::service::{Middleware, Service, ServiceCtx, cfg::SharedCfg};
use ntex::web::{HttpResponse, WebRequest, WebResponse};

/// The client's own files only; no inline scripts or styles, no frames, no plug-ins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// How long a browser may keep a CORS preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The middleware: security headers on every answer, CORS for the configured origins.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    headers: Vec<(HeaderName, HeaderValue)>,
    cors_origins: Vec<String>,
}

impl Guard {
    /// `https`: the listener serves TLS (browsers are then told to stay on HTTPS).
    pub fn new(cors_origins: Vec<String>, https: bool) -> Guard {
        let mut headers = vec![
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "same-origin"),
        ];
        if https {
            headers.push(("strict-transport-security", "max-age=31536000"));
        }
        Guard {
            inner: Arc::new(Settings {
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
                    .collect(),
                cors_origins,
            }),
        }
    }
}

impl<S> Middleware<S, SharedCfg> for Guard {
    type Service = GuardService<S>;

    fn create(&self, service: S, _: SharedCfg) -> Self::Service {
        GuardService {
            service,
            inner: self.inner.clone(),
        }
    }
}

pub struct GuardService<S> {
    service: S,
    inner: Arc<Settings>,
}

impl Settings {
    /// The request's origin, when CORS allows it.
    fn allowed_origin<E>(&self, req: &WebRequest<E>) -> Option<HeaderValue> {
        let origin = req.headers().get("origin")?;
        let text = origin.to_str().ok()?;
        self.cors_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == text)
            .then(|| origin.clone())
    }

    fn finish(&self, res: &mut WebResponse, origin: Option<HeaderValue>) {
        let headers = res.headers_mut();
        for (key, value) in &self.headers {
            if !headers.contains_key(key) {
                headers.insert(key.clone(), value.clone());
            }
        }
        if let Some(origin) = origin {
            headers.insert(
                HeaderName::from_static("access-control-allow-origin"),
                origin,
            );
            headers.insert(
                HeaderName::from_static("vary"),
                HeaderValue::from_static("origin"),
            );
        }
    }
}

impl<S, E> Service<WebRequest<E>> for GuardService<S>
where
    S: Service<WebRequest<E>, Response = WebResponse>,
{
    type Response = WebResponse;
    type Error = S::Error;

    ntex::forward_poll!(service);
    ntex::forward_ready!(service);
    ntex::forward_shutdown!(service);

    async fn call(
        &self,
        req: WebRequest<E>,
        ctx: ServiceCtx<'_, Self>,
    ) -> Result<Self::Response, Self::Error> {
        let origin = self.inner.allowed_origin(&req);
        let preflight = req.method() == Method::OPTIONS
            && req.headers().contains_key("access-control-request-method");
        if preflight && let Some(origin) = origin {
            // The API takes bearer tokens, not cookies: no credentials are allowed.
            let mut res = req.into_response(
                HttpResponse::NoContent()
                    .header(
                        "access-control-allow-methods",
                        "GET, POST, PUT, PATCH, DELETE",
                    )
                    .header(
                        "access-control-allow-headers",
                        "authorization, content-type",
                    )
                    .header("access-control-max-age", PREFLIGHT_MAX_AGE)
                    .finish(),
            );
            self.inner.finish(&mut res, Some(origin));
            return Ok(res);
        }
        let mut res = ctx.call(&self.service, req).await?;
        self.inner.finish(&mut res, origin);
        Ok(res)
    }
}
