//! HTTP calls of workflows (APIs and webhooks), on a blocking client kept off the async threads.

use std::time::Duration;

use serde_json::Value;

/// What an API answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// The body as JSON when it is JSON, as text otherwise.
    pub body: Value,
}

/// A request to make.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first when the call fails or the server answers 5xx.
    pub retries: u32,
}

/// Longest answer body read (a workflow keeps what it gets as a variable).
const MAX_BODY: u64 = 1024 * 1024;

fn attempt(request: &Request) -> Result<Answer, String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(request.timeout))
        .http_status_as_error(false)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut builder = ureq::http::Request::builder()
        .method(request.method.as_str())
        .uri(request.url.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let answer = match &request.body {
        Some(body) => {
            let built = builder
                .header("content-type", "application/json")
                .body(body.clone())
                .map_err(|e| format!("bad request to {}: {e}", request.url))?;
            agent.run(built)
        }
        None => {
            let built = builder
                .body(())
                .map_err(|e| format!("bad request to {}: {e}", request.url))?;
            agent.run(built)
        }
    }
    .map_err(|e| format!("{} {} failed: {e}", request.method, request.url))?;
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    let text = body
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, body })
}

/// Makes the request, retrying (with a growing pause) when it fails or the server answers 5xx.
pub async fn call(request: Request) -> Result<Answer, String> {
    let mut pause = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        let this = request.clone();
        let outcome = tokio::task::spawn_blocking(move || attempt(&this))
            .await
            .map_err(|e| format!("the HTTP call was interrupted: {e}"))?;
        let retry = match &outcome {
            Ok(answer) => answer.status >= 500,
            Err(_) => true,
        };
        if !retry || tries >= request.retries {
            return outcome;
        }
        tries += 1;
        tracing::debug!(url = %request.url, tries, "retrying an HTTP call");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
