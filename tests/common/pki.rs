//! Certificates for TLS tests: a CA, a server certificate for 127.0.0.1 and client certificates,
//! as PEM; and rumqttc options that connect over TLS with or without a client certificate.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rumqttc::{TlsConfiguration, Transport};

use super::mqtt::options3;

/// A client certificate and its key (PEM).
#[derive(Clone)]
pub struct ClientCert {
    pub cert: String,
    pub key: String,
}

/// A CA with the server's files written to a directory (`ca.pem`, `server.pem`, `server.key`).
pub struct Pki {
    pub ca: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let server_key = KeyPair::generate().expect("key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&server_key, &issuer)
            .expect("server cert");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("write");
        std::fs::write(dir.join("server.pem"), server.pem()).expect("write");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write");
        Pki {
            ca: issuer.pem(),
            issuer,
        }
    }

    /// A new client certificate signed by the CA, for `name`.
    pub fn client(&self, name: &str) -> ClientCert {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("client cert");
        ClientCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// 3.1.1 options for a TLS connection, presenting `client` if given.
    pub fn options(
        &self,
        port: u16,
        id: &str,
        client: Option<&ClientCert>,
    ) -> rumqttc::MqttOptions {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = options3(port, id);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: self.ca.clone().into_bytes(),
            alpn: None,
            client_auth: client.map(|c| (c.cert.clone().into_bytes(), c.key.clone().into_bytes())),
        }));
        options
    }
}

/// The `[[broker.listeners]]` value of a TLS listener on `port` with the files of `dir`;
/// `client_ca`: verify client certificates (`require`: refuse clients without one).
pub fn tls_listener(dir: &Path, port: u16, client_ca: bool, require: bool) -> String {
    let dir = dir.display();
    let clients = if client_ca {
        format!(r#",client_ca="{dir}/ca.pem",require_client_cert={require}"#)
    } else {
        String::new()
    };
    format!(
        r#"[{{name="tls",bind="127.0.0.1:{port}",transport="tls",tls={{cert="{dir}/server.pem",key="{dir}/server.key"{clients}}}}}]"#
    )
}
