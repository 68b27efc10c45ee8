//! A TCP relay between a node and a server that a test can cut and mend: what a node's network
//! does when a link fails. While cut, its connections are closed and new ones dropped at once.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Cable {
    /// Where the node connects (127.0.0.1).
    pub port: u16,
    up: watch::Sender<bool>,
    relay: JoinHandle<()>,
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

impl Cable {
    /// A relay from a free loopback port to `127.0.0.1:<target>`.
    pub async fn to(target: u16) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let (up, watching) = watch::channel(true);
        let relay = tokio::spawn(async move {
            while let Ok((mut near, _)) = listener.accept().await {
                let mut up = watching.clone();
                if !*up.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut far) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut near, &mut far) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Cable { port, up, relay }
    }

    /// Closes every connection through the cable, and every new one until [`Cable::mend`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn mend(&self) {
        self.up.send_replace(true);
    }
}
