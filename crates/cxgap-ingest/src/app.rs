//! Building and running the ingest service: `App::build` connects and binds (port 0 works,
//! and the bound addresses are exposed for tests), `App::run` serves until the shutdown
//! token is cancelled, then reports NOT_SERVING, drains in-flight requests within the
//! grace period and flushes the producer.

use crate::config::IngestConfig;
use crate::grpc::GrpcIngest;
use crate::http::{self, HttpState};
use crate::ingestor::{Ingestor, Limits};
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use anyhow::Context;
use cxgap_auth::Authenticator;
use cxgap_auth::TenantStore;
use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher};
use cxgap_bus::{Publisher, TopicSpec};
use cxgap_proto::ingest::ingest_service_server::IngestServiceServer;
use cxgap_runtime::{Check, OpsState, Shutdown};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{error, info};

pub struct App<P> {
    config: IngestConfig,
    ingestor: Arc<Ingestor<P>>,
    auth: Arc<Authenticator>,
    registry: Arc<Registry>,
    grpc: TcpListener,
    http: TcpListener,
}

impl<P> std::fmt::Debug for App<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("grpc", &self.grpc.local_addr().ok())
            .field("http", &self.http.local_addr().ok())
            .finish()
    }
}

impl App<KafkaPublisher> {
    /// Production wiring: Kafka and the configured database.
    pub async fn build(config: IngestConfig) -> anyhow::Result<Self> {
        let mut kafka = KafkaConfig::new(&config.kafka_brokers);
        kafka.extra = config.kafka_security.properties.clone();
        kafka.delivery_timeout = config.delivery_timeout;
        let publisher = Arc::new(KafkaPublisher::new(kafka).context("creating the Kafka producer")?);
        let store =
            TenantStore::connect_with_pool(&config.database_url, &config.api_key_pepper, config.database_pool_size)
                .await
                .context("connecting to the tenant database")?;
        Self::build_with(config, publisher, store).await
    }
}

impl<P: Publisher> App<P> {
    /// Any bus and store: embedded mode passes the in-process bus and a SQLite store.
    pub async fn build_with(config: IngestConfig, publisher: Arc<P>, store: TenantStore) -> anyhow::Result<Self> {
        publisher
            .ensure_topics(&[TopicSpec {
                name: config.feedback_topic.clone(),
                partitions: config.topic_partitions,
                replication: config.topic_replication,
            }])
            .await
            .with_context(|| format!("creating topic {}", config.feedback_topic))?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let ingestor = Arc::new(Ingestor::new(
            publisher,
            config.feedback_topic.clone(),
            Limits { max_batch_events: config.max_batch_events, max_event_bytes: config.max_event_bytes },
            RateLimiter::new(config.rate_per_second, config.rate_burst),
            metrics,
        ));
        let auth = Arc::new(Authenticator::new(store, config.auth_cache));
        let grpc =
            TcpListener::bind(config.grpc_addr).await.with_context(|| format!("binding gRPC {}", config.grpc_addr))?;
        let http =
            TcpListener::bind(config.http_addr).await.with_context(|| format!("binding HTTP {}", config.http_addr))?;
        Ok(App { config, ingestor, auth, registry: Arc::new(registry), grpc, http })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let App { config, ingestor, auth, registry, grpc, http } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<IngestServiceServer<GrpcIngest<P>>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cxgap_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building gRPC reflection")?;
        let service = IngestServiceServer::new(GrpcIngest {
            ingestor: ingestor.clone(),
            auth: auth.clone(),
            max_request_bytes: config.max_request_bytes,
        })
        .max_decoding_message_size(config.max_request_bytes.saturating_mul(4).max(64 << 20));

        let (broker, store) = (ingestor.publisher().clone(), auth.store().clone());
        let ops = OpsState {
            checks: vec![
                Check::new("broker", move || {
                    let b = broker.clone();
                    async move { b.check().await.map_err(|e| e.to_string()) }
                }),
                Check::new("database", move || {
                    let s = store.clone();
                    async move { s.ping().await.map_err(|e| e.to_string()) }
                }),
            ],
            registry,
            draining: shutdown.clone(),
        };
        let router = http::router(HttpState { ingestor: ingestor.clone(), auth }, config.max_request_bytes)
            .merge(cxgap_runtime::ops::router(ops));

        // Servers stop accepting when `stop` is cancelled: after health went NOT_SERVING.
        let stop = Shutdown::new();
        info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, tls = config.server_tls.is_some(), topic = %config.feedback_topic, "ingest serving");
        let grpc_task = tokio::spawn({
            let stop = stop.clone();
            cxgap_runtime::tls::grpc_server(config.server_tls.as_ref())
                .context("the gRPC port's TLS")?
                .add_service(health_service)
                .add_service(reflection)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    cxgap_runtime::tls::grpc_incoming(grpc),
                    async move { stop.cancelled().await },
                )
        });
        let stop_http_server = stop.clone();
        let http_task = cxgap_runtime::tls::serve_http(http, router, config.server_tls.as_ref(), async move {
            stop_http_server.cancelled().await
        })
        .context("serving HTTP")?;

        let mut grpc_task = grpc_task;
        let mut http_task = http_task;
        let early = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = &mut grpc_task => Some(("grpc", r.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into)))),
            r = &mut http_task => Some(("http", r.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into)))),
        };
        health.set_not_serving::<IngestServiceServer<GrpcIngest<P>>>().await;
        stop.cancel();
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            if early.as_ref().is_none_or(|(n, _)| *n != "grpc") {
                let _ = (&mut grpc_task).await;
            }
            if early.as_ref().is_none_or(|(n, _)| *n != "http") {
                let _ = (&mut http_task).await;
            }
        })
        .await;
        if drained.is_err() {
            error!("in-flight requests did not finish within the grace period");
            grpc_task.abort();
            http_task.abort();
        }
        let flushed = ingestor.publisher().flush(config.shutdown_grace).await;
        info!(flushed = flushed.is_ok(), "ingest stopped");
        if let Some((name, Err(e))) = early {
            return Err(e.context(format!("the {name} server failed")));
        }
        flushed.context("flushing the producer")?;
        Ok(())
    }
}
