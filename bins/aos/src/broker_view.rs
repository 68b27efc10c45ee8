//! `aos broker`: the broker view from the command line — the MQTT clients the broker nodes
//! hold, their retained messages and traffic, disconnecting a client and deleting a retained
//! message. Unlike the other management commands it goes through a running node's REST API
//! (only the broker nodes know their clients), signed in as a user whose roles allow it, and
//! so it is audited as that user.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use aos_core::Settings;
use aos_core::broker_admin::{ClientInfo, RetainedInfo, Traffic};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{EXIT_FAILURE, fail};

#[derive(Args, Debug)]
pub struct BrokerView {
    /// The node's HTTP address. Default: $AOS_URL, else `web.listen` of the configuration on
    /// this machine.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Sign in as this user, the password read from standard input (or $AOS_PASSWORD).
    /// Default: $AOS_TOKEN, an access token.
    #[arg(long, value_name = "LOGIN")]
    user: Option<String>,
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(Subcommand, Debug)]
enum BrokerCommand {
    /// List the MQTT clients (sessions) the broker nodes hold, by client id.
    Clients {
        /// Part of the client id, device id, application name or username.
        #[arg(long)]
        search: Option<String>,
        /// Only connected clients.
        #[arg(long)]
        connected: bool,
        /// Only one tenant's (system administrators; default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Close a client's connection (its session stays, its will goes out).
    Disconnect {
        client_id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List retained messages by topic.
    Retained {
        /// An MQTT topic filter.
        #[arg(long, default_value = "#")]
        filter: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Delete the retained message of a topic (nobody receives anything).
    Forget {
        topic: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Each broker node's connections and messages per second.
    Traffic,
}

pub fn run(settings: &Settings, view: BrokerView) -> ExitCode {
    match execute(settings, view) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(EXIT_FAILURE, format!("{err:#}")),
    }
}

/// A signed-in connection to a node's REST API.
struct Api {
    agent: ureq::Agent,
    url: String,
    token: String,
}

/// Every failure answers `{"error": {"message"}}`.
#[derive(Deserialize)]
struct Failure {
    error: FailureBody,
}

#[derive(Deserialize)]
struct FailureBody {
    message: String,
}

impl Api {
    fn connect(
        settings: &Settings,
        url: Option<String>,
        user: Option<String>,
    ) -> anyhow::Result<Api> {
        let url = match url.or_else(|| std::env::var("AOS_URL").ok()) {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => local_url(settings)?,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut api = Api {
            agent,
            url,
            token: String::new(),
        };
        api.token = match user {
            Some(login) => api.sign_in(&login)?,
            None => std::env::var("AOS_TOKEN").map_err(|_| {
                anyhow::anyhow!("say who you are: --user LOGIN (the password on standard input), or an access token in AOS_TOKEN")
            })?,
        };
        Ok(api)
    }

    fn sign_in(&self, login: &str) -> anyhow::Result<String> {
        let password = match std::env::var("AOS_PASSWORD") {
            Ok(password) => password,
            Err(_) => {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        #[derive(Deserialize)]
        struct Tokens {
            access_token: String,
        }
        let body = serde_json::json!({ "login": login, "password": password }).to_string();
        let answer = self
            .agent
            .post(format!("{}/api/auth/sign-in", self.url))
            .header("content-type", "application/json")
            .send(body.as_str());
        let tokens: Tokens = read(answer, "sign in")?;
        Ok(tokens.access_token)
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url);
        self.without_body(self.agent.get(url), path, query)
    }

    fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.url);
        self.without_body::<Option<serde_json::Value>>(self.agent.delete(url), path, query)
            .map(|_| ())
    }

    fn without_body<T: DeserializeOwned>(
        &self,
        mut request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        request = request.header("authorization", format!("Bearer {}", self.token));
        for (key, value) in query {
            request = request.query(*key, value);
        }
        read(request.call(), path)
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<T> {
        let answer = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .send(body.to_string().as_str());
        read(answer, path)
    }
}

/// The answer's JSON body, or the API's error message.
fn read<T: DeserializeOwned>(
    answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    what: &str,
) -> anyhow::Result<T> {
    let answer = answer.with_context(|| format!("cannot reach the node ({what})"))?;
    let status = answer.status();
    let text = answer
        .into_body()
        .read_to_string()
        .with_context(|| format!("cannot read the node's answer ({what})"))?;
    if !status.is_success() {
        match serde_json::from_str::<Failure>(&text) {
            Ok(failure) => bail!("{}", failure.error.message),
            Err(_) => bail!("the node answered {status} ({what})"),
        }
    }
    let text = if text.is_empty() { "null" } else { &text };
    serde_json::from_str(text)
        .with_context(|| format!("the node's answer is not what `aos` expects ({what})"))
}

/// The node on this machine, as `web.listen` (and `web.tls`) of the configuration say.
fn local_url(settings: &Settings) -> anyhow::Result<String> {
    #[derive(Deserialize, serde::Serialize)]
    struct Web {
        listen: SocketAddr,
        tls: Option<serde_json::Value>,
    }
    impl Default for Web {
        fn default() -> Web {
            Web {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                tls: None,
            }
        }
    }
    let web: Web = settings.section("web")?;
    let mut address = web.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    Ok(format!("{scheme}://{address}"))
}

/// A page of the broker view.
#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    total: u64,
    silent: Vec<String>,
}

impl<T> Page<T> {
    fn footer(&self, what: &str) {
        println!("{} of {} {what}", self.items.len(), self.total);
        warn_silent(&self.silent);
    }
}

fn warn_silent(silent: &[String]) {
    if !silent.is_empty() {
        eprintln!(
            "warning: broker nodes {} did not answer in time: what they hold is missing",
            silent.join(", ")
        );
    }
}

fn execute(settings: &Settings, view: BrokerView) -> anyhow::Result<()> {
    let api = Api::connect(settings, view.url, view.user)?;
    let tenant = |t: Option<String>| t.map(|t| ("tenant", t));
    match view.command {
        BrokerCommand::Clients {
            search,
            connected,
            tenant: t,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(search.map(|s| ("search", s)));
            query.extend(connected.then(|| ("connected", "true".to_string())));
            query.extend(tenant(t));
            let page: Page<ClientInfo> = api.get("/api/broker/clients", &query)?;
            println!(
                "{:<32} {:<12} {:<5} {:<22} {:>6} {:>6}  subscriptions",
                "client id", "node", "mqtt", "address", "queued", "subs"
            );
            for c in &page.items {
                println!(
                    "{:<32} {:<12} {:<5} {:<22} {:>6} {:>6}  {}",
                    c.client_id,
                    c.node,
                    c.protocol.as_deref().unwrap_or("-"),
                    c.address
                        .as_deref()
                        .unwrap_or(if c.connected { "?" } else { "(offline)" }),
                    c.queued,
                    c.subscription_count,
                    c.subscriptions
                        .iter()
                        .map(|s| format!("{} (QoS {})", s.filter, s.qos))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            page.footer("clients");
        }
        BrokerCommand::Disconnect {
            client_id,
            tenant: t,
        } => {
            #[derive(Deserialize)]
            struct Disconnected {
                node: String,
            }
            let mut body = serde_json::json!({ "client_id": client_id });
            if let Some(t) = t {
                body["tenant"] = t.into();
            }
            let done: Disconnected = api.post("/api/broker/clients/disconnect", &body)?;
            println!("disconnected {client_id} (on node {})", done.node);
        }
        BrokerCommand::Retained {
            filter,
            tenant: t,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string()), ("filter", filter)];
            query.extend(tenant(t));
            let page: Page<RetainedInfo> = api.get("/api/broker/retained", &query)?;
            for m in &page.items {
                println!(
                    "{}  QoS {}  {} bytes  {}",
                    m.topic,
                    m.qos,
                    m.size,
                    m.text.as_deref().unwrap_or("(binary)")
                );
            }
            page.footer("retained messages");
        }
        BrokerCommand::Forget { topic, tenant: t } => {
            let mut query = vec![("topic", topic.clone())];
            query.extend(tenant(t));
            api.delete("/api/broker/retained", &query)?;
            println!("forgot the retained message of {topic}");
        }
        BrokerCommand::Traffic => {
            #[derive(Deserialize)]
            struct View {
                nodes: Vec<Traffic>,
                silent: Vec<String>,
            }
            let view: View = api.get("/api/broker/traffic", &[])?;
            println!(
                "{:<20} {:>11} {:>9} {:>9} {:>10} {:>10}",
                "node", "connections", "sessions", "retained", "in msg/s", "out msg/s"
            );
            for n in &view.nodes {
                println!(
                    "{:<20} {:>11} {:>9} {:>9} {:>10.1} {:>10.1}",
                    n.node,
                    n.connections,
                    n.sessions,
                    n.retained,
                    n.messages_in_per_second,
                    n.messages_out_per_second
                );
            }
            warn_silent(&view.silent);
        }
    }
    Ok(())
}
