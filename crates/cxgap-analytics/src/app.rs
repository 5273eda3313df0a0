//! Building and running the analytics service: the consumer loop and the HTTP query API
//! (with `/healthz`, `/readyz`, `/metrics`). On shutdown the consumer finishes and commits
//! the batch in hand, then the HTTP server drains.

use crate::config::{AnalyticsConfig, Assignment};
use crate::consumer;
use crate::grpc::GrpcQuery;
use crate::http::{self, QueryState};
use crate::metrics::Metrics;
use crate::processor::{Processor, ProcessorConfig};
use crate::signals::{self, SignalHub};
use crate::store::AnalyticsStore;
use anyhow::Context;
use cxgap_auth::{Authenticator, TenantStore};
use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use cxgap_bus::membership::{self, Lease};
use cxgap_bus::{Publisher, Subscriber, TopicSpec};
use cxgap_domain::risk::RiskModel;
use cxgap_proto::analytics::analytics_service_server::AnalyticsServiceServer;
use cxgap_runtime::{Check, OpsState, Shutdown};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::info;

pub struct App<S, P> {
    config: AnalyticsConfig,
    subscriber: S,
    processor: Arc<Processor<P>>,
    auth: Arc<Authenticator>,
    registry: Registry,
    metrics: Metrics,
    grpc: TcpListener,
    http: TcpListener,
}

impl<S, P> std::fmt::Debug for App<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("http", &self.http.local_addr().ok()).finish_non_exhaustive()
    }
}

impl App<KafkaSubscriber, KafkaPublisher> {
    pub async fn build(config: AnalyticsConfig) -> anyhow::Result<Self> {
        let mut kafka = KafkaConfig::new(&config.kafka_brokers);
        kafka.extra = config.kafka_security.properties.clone();
        kafka.session_timeout = config.session_timeout;
        kafka.fetch_wait = config.fetch_wait;
        let publisher = KafkaPublisher::new(kafka.clone()).context("creating the dead-letter producer")?;
        let topics: Vec<TopicSpec> = [&config.feedback_topic, &config.dlq_topic, &config.signals_topic]
            .into_iter()
            .map(|t| TopicSpec {
                name: t.clone(),
                partitions: config.topic_partitions,
                replication: config.topic_replication,
            })
            .collect();
        publisher.ensure_topics(&topics).await.context("creating topics")?;
        let subscriber = match config.assignment {
            Assignment::Kafka => KafkaSubscriber::new(&kafka, &config.consumer_group, &[&config.feedback_topic])
                .context("joining the consumer group")?,
            Assignment::Database => {
                KafkaSubscriber::unassigned(&kafka, &config.consumer_group).context("creating the consumer")?
            }
        };
        let store = AnalyticsStore::connect_with_pool(&config.database_url, config.database_pool_size)
            .await
            .context("connecting to the analytics database")?;
        let tenants =
            TenantStore::connect_with_pool(&config.database_url, &config.api_key_pepper, config.database_pool_size)
                .await
                .context("connecting to the tenant database")?;
        Self::build_with(config, subscriber, publisher, store, tenants).await
    }
}

impl<S: Subscriber, P: Publisher + Clone> App<S, P> {
    pub async fn build_with(
        config: AnalyticsConfig,
        subscriber: S,
        dlq: P,
        store: AnalyticsStore,
        tenants: TenantStore,
    ) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let processor = Arc::new(Processor {
            store,
            config: ProcessorConfig {
                group: config.consumer_group.clone(),
                topic: config.feedback_topic.clone(),
                dlq_topic: config.dlq_topic.clone(),
            },
            dlq,
            signals: SignalHub::new(RiskModel::default()),
        });
        let auth = Arc::new(Authenticator::new(tenants, config.auth_cache));
        let grpc =
            TcpListener::bind(config.grpc_addr).await.with_context(|| format!("binding gRPC {}", config.grpc_addr))?;
        let http =
            TcpListener::bind(config.http_addr).await.with_context(|| format!("binding HTTP {}", config.http_addr))?;
        Ok(App { config, subscriber, processor, auth, registry, metrics, grpc, http })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let App { config, subscriber, processor, auth, registry, metrics, grpc, http } = self;
        let store = processor.store.clone();
        let dlq = processor.dlq.clone();
        let ops = OpsState {
            checks: vec![
                Check::new("database", {
                    let s = store.clone();
                    move || {
                        let s = s.clone();
                        async move { s.ping().await.map_err(|e| e.to_string()) }
                    }
                }),
                Check::new("broker", move || {
                    let b = dlq.clone();
                    async move { b.check().await.map_err(|e| e.to_string()) }
                }),
            ],
            registry: Arc::new(registry),
            draining: shutdown.clone(),
        };
        let router = http::router(QueryState {
            store: store.clone(),
            auth: auth.clone(),
            model: RiskModel::default(),
            alerting_url: config.dashboard_alerting_url.clone(),
        })
        .merge(cxgap_runtime::ops::router(ops));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AnalyticsServiceServer<GrpcQuery>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cxgap_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building gRPC reflection")?;
        let query = AnalyticsServiceServer::new(GrpcQuery { store: store.clone(), auth, model: RiskModel::default() });

        // Forget processed ids past the dedup window, and signals past their retention, hourly.
        let pruner = tokio::spawn({
            let (store, window, stop) = (store.clone(), config.dedup_window, shutdown.clone());
            let retention = config.signal_retention;
            async move {
                loop {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    if let Err(e) = store.prune_processed(now - window.as_millis() as i64).await {
                        tracing::warn!(error = %e, "pruning processed ids failed");
                    }
                    if let Err(e) = store.prune_signals(now - retention.as_millis() as i64).await {
                        tracing::warn!(error = %e, "pruning signals failed");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                    }
                }
            }
        });
        let stop_http = Shutdown::new();
        info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, tls = config.server_tls.is_some(), group = %config.consumer_group, topic = %config.feedback_topic, "analytics serving");
        let stop_http_server = stop_http.clone();
        let server = cxgap_runtime::tls::serve_http(http, router, config.server_tls.as_ref(), async move {
            stop_http_server.cancelled().await
        })
        .context("serving HTTP")?;
        let grpc_server = tokio::spawn({
            let stop = stop_http.clone();
            cxgap_runtime::tls::grpc_server(config.server_tls.as_ref())
                .context("the gRPC port's TLS")?
                .add_service(health_service)
                .add_service(reflection)
                .add_service(query)
                .serve_with_incoming_shutdown(
                    cxgap_runtime::tls::grpc_incoming(grpc),
                    async move { stop.cancelled().await },
                )
        });
        let hub = processor.signals.clone();
        // Before the first batch: its customers' risk needs the tenants' stage gaps.
        let swept = signals::start(&store, &hub).await;
        let stop_signals = Shutdown::new();
        let evaluator = tokio::spawn(signals::evaluate_loop(
            store.clone(),
            hub.clone(),
            config.signal_interval,
            stop_signals.clone(),
            swept,
        ));
        let relay = tokio::spawn(signals::relay_loop(
            store.clone(),
            processor.dlq.clone(),
            config.signals_topic.clone(),
            hub.clone(),
            metrics.signal_publish_seconds.clone(),
            stop_signals.clone(),
        ));
        let lag = tokio::spawn(lag_loop(
            store.clone(),
            processor.dlq.clone(),
            config.consumer_group.clone(),
            config.feedback_topic.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let limits = consumer::limits(&config);
        let stop_lease = Shutdown::new();
        let (assignments, lease) = match config.assignment {
            Assignment::Kafka => (None, None),
            Assignment::Database => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                let lease = Lease {
                    group: config.consumer_group.clone(),
                    topic: config.feedback_topic.clone(),
                    member: membership::member_id(),
                    session: config.session_timeout,
                };
                info!(member = %lease.member, "partitions assigned through database leases");
                let task =
                    tokio::spawn(membership::run(store.leases(), processor.dlq.clone(), lease, tx, stop_lease.clone()));
                (Some(rx), Some(task))
            }
        };
        let consumed = consumer::run(subscriber, processor, limits, metrics, shutdown.clone(), assignments).await;
        // Give the lease up only after the batch in hand is committed.
        stop_lease.cancel();
        if let Some(task) = lease {
            let _ = tokio::time::timeout(config.shutdown_grace, task).await;
        }
        // The consumer only returns on shutdown (or a batch it could not finish).
        shutdown.cancel();
        // The last batch's figures and signals leave before the process does.
        if let Err(e) = signals::evaluate_dirty(&store, &hub).await {
            tracing::warn!(error = %e, "final aggregate evaluation failed; the next start redoes it");
        }
        stop_signals.cancel();
        let _ = tokio::time::timeout(config.shutdown_grace, relay).await;
        evaluator.abort();
        lag.abort();
        health.set_not_serving::<AnalyticsServiceServer<GrpcQuery>>().await;
        stop_http.cancel();
        let _ = tokio::time::timeout(config.shutdown_grace, server).await;
        let _ = tokio::time::timeout(config.shutdown_grace, grpc_server).await;
        pruner.abort();
        info!("analytics stopped");
        consumed
    }
}

/// Consumer lag from the group's offsets in the database (the truth about progress) and
/// the topic's end offsets, every 10 s.
async fn lag_loop<P: Publisher>(
    store: AnalyticsStore,
    bus: P,
    group: String,
    topic: String,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    loop {
        match (bus.end_offsets(&topic).await, store.offsets(&group, &topic).await) {
            (Ok(ends), Ok(done)) => {
                let done: std::collections::HashMap<i32, i64> = done.into_iter().collect();
                for (p, end) in ends {
                    let next = done.get(&p).copied().unwrap_or(0);
                    metrics.lag(p, (end - next).max(0));
                }
            }
            (Err(e), _) => tracing::debug!(error = %e, "end offsets unavailable; lag not updated"),
            (_, Err(e)) => tracing::debug!(error = %e, "stored offsets unavailable; lag not updated"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
}
