//! TLS on a service's own ports, for clusters that encrypt traffic between pods without a
//! mesh: one certificate and key for both the gRPC and the HTTP port, and optionally a CA
//! whose client certificates are required (mutual TLS). Off unless configured; TLS usually
//! ends at the ingress.
//!
//! gRPC uses tonic's own TLS server. The HTTP port (API, `/healthz`, `/readyz`,
//! `/metrics`) goes through [`TlsListener`]: handshakes run in their own tasks with a
//! deadline, so a client that stalls mid-handshake holds up no one else. Under mutual TLS
//! the gRPC port refuses a client without a certificate at the handshake; the HTTP port
//! answers the kubelet's probes without one and refuses everything else with 401.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
use tracing::debug;

/// A service's TLS: the PEM files as read at start, and the HTTP port's rustls
/// configuration built from them (so a bad file fails the start, not the first client).
#[derive(Clone)]
pub struct ServerTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    http: Arc<rustls::ServerConfig>,
}

/// Equal when made from the same files' contents (the rustls configuration follows from them).
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert, &self.key, &self.client_ca) == (&other.cert, &other.key, &other.client_ca)
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mutual", &self.client_ca.is_some()).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM: the certificate chain, its private key and, for mutual TLS, the CAs that
    /// sign client certificates. Each error names the part that is wrong.
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, client_ca: Option<Vec<u8>>) -> Result<ServerTls, String> {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate file is not PEM certificates: {e}"))?;
        if chain.is_empty() {
            return Err("the certificate file holds no certificate".into());
        }
        let private = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| format!("the key file holds no private key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| format!("the client CA file is not PEM certificates: {e}"))?;
                    roots.add(c).map_err(|e| format!("the client CA file: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("the client CA file holds no certificate".into());
                }
                // Optional at the handshake, so the kubelet's probes (which present no
                // certificate) reach /healthz and /readyz; every other path refuses a
                // connection without one ([`require_client_certificate`]). A certificate
                // that is presented is always verified.
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("the client CA file: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut http = builder
            .with_single_cert(chain, private)
            .map_err(|e| format!("the certificate and key do not make a server identity: {e}"))?;
        // axum serves HTTP/1.1 only (the `http1` feature).
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { cert, key, client_ca, http: Arc::new(http) })
    }

    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The gRPC port's TLS (tonic's server; it negotiates HTTP/2 by ALPN).
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert, &self.key));
        match &self.client_ca {
            Some(ca) => tls.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => tls,
        }
    }

    /// The HTTP port's listener over `listener`.
    pub fn http(&self, listener: TcpListener) -> std::io::Result<TlsListener> {
        TlsListener::new(listener, self.http.clone())
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener whose connections come out with TLS done, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => {
                        no_delay(&c.0);
                        c
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended (it does not, short of a panic): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Whether the client of a TLS connection presented a certificate (verified by then:
/// the handshake fails on one the CA did not sign).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate(pub bool);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientCertificate {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientCertificate(stream.io().get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()))
    }
}

/// The paths the kubelet probes, open without a client certificate under mutual TLS.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// Under mutual TLS: a request without a client certificate gets 401, unless it is a probe.
async fn require_client_certificate(
    axum::extract::ConnectInfo(ClientCertificate(presented)): axum::extract::ConnectInfo<ClientCertificate>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if presented || PROBES.contains(&request.uri().path()) {
        next.run(request).await
    } else {
        (axum::http::StatusCode::UNAUTHORIZED, "a client certificate is required (mutual TLS)\n").into_response()
    }
}

/// Serves `router` on `listener` until `stop` completes, over TLS when `tls` is given.
pub fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&ServerTls>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    use std::future::IntoFuture;
    Ok(match tls {
        None => tokio::spawn(axum::serve(http_incoming(listener), router).with_graceful_shutdown(stop).into_future()),
        Some(tls) if tls.mutual() => {
            let router = router.layer(axum::middleware::from_fn(require_client_certificate));
            let service = router.into_make_service_with_connect_info::<ClientCertificate>();
            tokio::spawn(axum::serve(tls.http(listener)?, service).with_graceful_shutdown(stop).into_future())
        }
        Some(tls) => tokio::spawn(axum::serve(tls.http(listener)?, router).with_graceful_shutdown(stop).into_future()),
    })
}

/// Sends small writes at once (`TCP_NODELAY`). With Nagle's algorithm on, a small write
/// waits while an earlier one is unacknowledged, and a client that is only waiting to read
/// (a call's response, an alert stream) acknowledges late on purpose (delayed ACK, up to
/// 40 ms on Linux): a gRPC response written after a flow-control update waited for it,
/// which held gRPC ingest at a third less throughput at four calls in flight per
/// connection (docs/benchmarks.md). Best effort: a socket that refuses the option still
/// serves.
fn no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// The plain HTTP port's connections, with [`no_delay`] (`axum::serve` leaves Nagle on).
fn http_incoming(listener: TcpListener) -> impl axum::serve::Listener<Io = TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp: &mut TcpStream| no_delay(tcp))
}

/// A gRPC port's connections, with [`no_delay`]: serving from a listener of one's own
/// (`serve_with_incoming`), tonic ignores its builder's `tcp_nodelay`, which it would
/// otherwise set.
pub fn grpc_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A gRPC server builder, with TLS when `tls` is given.
pub fn grpc_server(tls: Option<&ServerTls>) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let server = tonic::transport::Server::builder();
    match tls {
        Some(tls) => server.tls_config(tls.grpc()),
        None => Ok(server),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn bound() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        (listener, addr)
    }

    #[tokio::test]
    async fn grpc_connections_send_small_writes_at_once() {
        let (listener, addr) = bound().await;
        let mut incoming = grpc_incoming(listener);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let server_side = incoming.next().await.expect("a connection").expect("accepted");
        assert!(server_side.nodelay().expect("read TCP_NODELAY"), "Nagle's algorithm left on");
    }

    #[tokio::test]
    async fn plain_http_connections_send_small_writes_at_once() {
        use axum::serve::Listener;
        let (listener, addr) = bound().await;
        let mut incoming = http_incoming(listener);
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server_side, peer) = incoming.accept().await;
        assert_eq!(peer, client.local_addr().expect("client address"));
        assert!(server_side.nodelay().expect("read TCP_NODELAY"), "Nagle's algorithm left on");
    }

    /// The TLS listener sets the option itself, on the accepted socket before the
    /// handshake: a real handshake (openssl's certificates, a rustls client) and the
    /// server's side of the socket it yields.
    #[tokio::test]
    async fn tls_http_connections_send_small_writes_at_once() {
        use axum::serve::Listener;
        use rustls::pki_types::{CertificateDer, ServerName};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pki = cxgap_testkit::tls::Pki::new(dir.path(), "nodelay").expect("a CA");
        let pair = pki.server("http").expect("a server certificate");
        let read = |p: &std::path::Path| std::fs::read(p).expect("read a PEM file");
        let tls = ServerTls::from_pem(read(&pair.cert), read(&pair.key), None).expect("the server's TLS");
        let (listener, addr) = bound().await;
        let mut incoming = tls.http(listener).expect("the TLS listener");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pki.ca()).expect("the CA's certificate")).expect("a trusted CA");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("a server name");
        // The server yields the connection only once the handshake is done, which needs
        // the client's side running beside it.
        let handshake = tokio::spawn(async move { connector.connect(name, tcp).await });
        let (server_side, _) = incoming.accept().await;
        handshake.await.expect("the client task").expect("the client's handshake");
        assert!(server_side.get_ref().0.nodelay().expect("read TCP_NODELAY"), "Nagle's algorithm left on");
    }
}
