//! Announces every successful change made through the API (see `aos_core::changes`), so the
//! caches of every node follow within a moment. Sign-in, the HTTP device API and live streams
//! change nothing cached, nor does the broker view (it acts on the broker nodes directly).

use std::sync::Arc;

use aos_core::Bus;
use ntex::http::Method;
use ntex::service::{Middleware, Service, ServiceCtx, cfg::SharedCfg};
use ntex::web::{WebRequest, WebResponse};

#[derive(Clone)]
pub struct Announce {
    bus: Arc<dyn Bus>,
}

impl Announce {
    pub fn new(bus: Arc<dyn Bus>) -> Announce {
        Announce { bus }
    }
}

impl<S> Middleware<S, SharedCfg> for Announce {
    type Service = AnnounceService<S>;

    fn create(&self, service: S, _: SharedCfg) -> Self::Service {
        AnnounceService {
            service,
            bus: self.bus.clone(),
        }
    }
}

pub struct AnnounceService<S> {
    service: S,
    bus: Arc<dyn Bus>,
}

/// Whether a request may change what nodes cache.
fn changes_something<E>(req: &WebRequest<E>) -> bool {
    let path = req.path();
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && path.starts_with("/api/")
        && ![
            "/api/auth/",
            "/api/device/",
            "/api/live",
            "/api/me",
            "/api/broker/",
        ]
        .iter()
        .any(|p| path.starts_with(p))
}

impl<S, E> Service<WebRequest<E>> for AnnounceService<S>
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
        let announce = changes_something(&req);
        let response = ctx.call(&self.service, req).await?;
        if announce && response.status().is_success() {
            aos_core::changes::announce(self.bus.as_ref()).await;
        }
        Ok(response)
    }
}
