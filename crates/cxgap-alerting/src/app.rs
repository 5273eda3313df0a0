//! Building and running the alerting service: the signal consumer, the delivery worker,
//! the gRPC API (with health and reflection) and `/healthz`, `/readyz`, `/metrics`. On
//! shutdown the batch in hand is committed, in-flight deliveries finish, then the servers
//! drain; pending deliveries stay in the outbox for the next start.

use crate::config::AlertingConfig;
use crate::delivery::{Deliverer, DeliveryConfig};
use crate::grpc::GrpcAlerting;
use crate::metrics::{Metrics, StateLabel};
use crate::processor::{BatchStats, Processor, ProcessorConfig};
use crate::store::{AlertStore, StoreError};
use anyhow::Context;
use cxgap_auth::{Authenticator, TenantStore};
use cxgap_bus::consume::{self, BatchLimits, Failure, PartitionProcessor};
use cxgap_bus::kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use cxgap_bus::{Consumed, Publisher, Subscriber, TopicSpec};
use cxgap_proto::alerting::alerting_service_server::AlertingServiceServer;
use cxgap_runtime::{Check, OpsState, Shutdown};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How long signal ids are remembered for dedup.
const SEEN_WINDOW: Duration = Duration::from_secs(7 * 86_400);

pub struct App<S, P> {
    config: AlertingConfig,
    subscriber: S,
    publisher: P,
    store: AlertStore,
    auth: Arc<Authenticator>,
    grpc: TcpListener,
    http: TcpListener,
}

impl<S, P> std::fmt::Debug for App<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("grpc", &self.grpc.local_addr().ok()).finish_non_exhaustive()
    }
}

impl App<KafkaSubscriber, KafkaPublisher> {
    pub async fn build(config: AlertingConfig) -> anyhow::Result<Self> {
        let mut kafka = KafkaConfig::new(&config.kafka_brokers);
        kafka.extra = config.kafka_security.properties.clone();
        kafka.session_timeout = config.session_timeout;
        kafka.fetch_wait = config.fetch_wait;
        let publisher = KafkaPublisher::new(kafka.clone()).context("creating the producer")?;
        let topics: Vec<TopicSpec> = [&config.signals_topic, &config.alerts_topic]
            .into_iter()
            .map(|t| TopicSpec {
                name: t.clone(),
                partitions: config.topic_partitions,
                replication: config.topic_replication,
            })
            .collect();
        publisher.ensure_topics(&topics).await.context("creating topics")?;
        let subscriber = if config.database_assignment {
            KafkaSubscriber::unassigned(&kafka, &config.group).context("creating the consumer")?
        } else {
            KafkaSubscriber::new(&kafka, &config.group, &[&config.signals_topic])
                .context("joining the consumer group")?
        };
        let store = AlertStore::connect_with_pool(&config.database_url, config.database_pool_size)
            .await
            .context("connecting to the alerting database")?;
        let tenants =
            TenantStore::connect_with_pool(&config.database_url, &config.api_key_pepper, config.database_pool_size)
                .await
                .context("connecting to the tenant database")?;
        Self::build_with(config, subscriber, publisher, store, tenants).await
    }
}

impl<S: Subscriber, P: Publisher + Clone> App<S, P> {
    pub async fn build_with(
        config: AlertingConfig,
        subscriber: S,
        publisher: P,
        store: AlertStore,
        tenants: TenantStore,
    ) -> anyhow::Result<Self> {
        let auth = Arc::new(Authenticator::new(tenants, config.auth_cache));
        let grpc =
            TcpListener::bind(config.grpc_addr).await.with_context(|| format!("binding gRPC {}", config.grpc_addr))?;
        let http =
            TcpListener::bind(config.http_addr).await.with_context(|| format!("binding HTTP {}", config.http_addr))?;
        Ok(App { config, subscriber, publisher, store, auth, grpc, http })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let App { config, subscriber, publisher, store, auth, grpc, http } = self;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let ops = OpsState {
            checks: vec![
                Check::new("database", {
                    let s = store.clone();
                    move || {
                        let s = s.clone();
                        async move { s.ping().await.map_err(|e| e.to_string()) }
                    }
                }),
                Check::new("broker", {
                    let b = publisher.clone();
                    move || {
                        let b = b.clone();
                        async move { b.check().await.map_err(|e| e.to_string()) }
                    }
                }),
            ],
            registry: Arc::new(registry),
            draining: shutdown.clone(),
        };
        let log_changed = Arc::new(Notify::new());
        let wake_deliveries = Arc::new(Notify::new());
        let http_api = crate::http::router(crate::http::HttpState {
            store: store.clone(),
            auth: auth.clone(),
            log_changed: log_changed.clone(),
            deliveries: wake_deliveries.clone(),
        });
        let api = GrpcAlerting {
            store: store.clone(),
            auth,
            log_changed: log_changed.clone(),
            deliveries: wake_deliveries.clone(),
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AlertingServiceServer<GrpcAlerting>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cxgap_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building gRPC reflection")?;
        let stop_servers = Shutdown::new();
        info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, tls = config.server_tls.is_some(), group = %config.group, topic = %config.signals_topic, "alerting serving");
        let stop_http_server = stop_servers.clone();
        let http_server = cxgap_runtime::tls::serve_http(
            http,
            http_api.merge(cxgap_runtime::ops::router(ops)),
            config.server_tls.as_ref(),
            async move { stop_http_server.cancelled().await },
        )
        .context("serving HTTP")?;
        let grpc_server = tokio::spawn({
            let stop = stop_servers.clone();
            cxgap_runtime::tls::grpc_server(config.server_tls.as_ref())
                .context("the gRPC port's TLS")?
                .add_service(health_service)
                .add_service(reflection)
                .add_service(AlertingServiceServer::new(api))
                .serve_with_incoming_shutdown(
                    cxgap_runtime::tls::grpc_incoming(grpc),
                    async move { stop.cancelled().await },
                )
        });
        let deliverer = Arc::new(Deliverer {
            store: store.clone(),
            config: DeliveryConfig {
                schedule: config.retry_schedule.clone(),
                timeout: config.webhook_timeout,
                guard: config.webhook_guard.clone(),
                concurrency: config.delivery_concurrency,
            },
            kafka: publisher.clone(),
            wake: wake_deliveries.clone(),
            metrics: metrics.clone(),
        });
        let stop_delivery = Shutdown::new();
        let delivery = tokio::spawn(deliverer.run(stop_delivery.clone()));
        let housekeeping = tokio::spawn(housekeeping(store.clone(), metrics.clone(), shutdown.clone()));
        let processor = Processor {
            store: store.clone(),
            config: ProcessorConfig {
                group: config.group.clone(),
                topic: config.signals_topic.clone(),
                repeat_ms: config.repeat_interval.as_millis() as i64,
            },
        };
        let stop_lease = Shutdown::new();
        let (assignments, lease) = if config.database_assignment {
            let (tx, rx) = tokio::sync::watch::channel(None);
            let lease = cxgap_bus::membership::Lease {
                group: config.group.clone(),
                topic: config.signals_topic.clone(),
                member: cxgap_bus::membership::member_id(),
                session: config.session_timeout,
            };
            info!(member = %lease.member, "signal partitions assigned through database leases");
            let task = tokio::spawn(cxgap_bus::membership::run(
                store.leases(),
                publisher.clone(),
                lease,
                tx,
                stop_lease.clone(),
            ));
            (Some(rx), Some(task))
        } else {
            (None, None)
        };
        let signals = Signals {
            processor: &processor,
            metrics: &metrics,
            committed: || {
                log_changed.notify_waiters();
                wake_deliveries.notify_one();
            },
        };
        // A batch in flight holds a connection for its transaction. Partition batches that
        // close together share one transaction while they hold at most a quarter of a full
        // batch, as analytics' do: under load batches fill and partitions go side by side.
        let in_flight = config.database_pool_size as usize;
        let limits = BatchLimits::new(config.batch_max_events, config.batch_max_wait)
            .in_flight(in_flight)
            .grouped(config.batch_max_events / 4);
        let consumed =
            consume::run(subscriber, &signals, limits, &shutdown, assignments).await.map_err(anyhow::Error::msg);
        // Give the lease up only after the batch in hand is committed.
        stop_lease.cancel();
        if let Some(task) = lease {
            let _ = tokio::time::timeout(config.shutdown_grace, task).await;
        }
        shutdown.cancel();
        health.set_not_serving::<AlertingServiceServer<GrpcAlerting>>().await;
        stop_delivery.cancel();
        let _ = tokio::time::timeout(config.shutdown_grace, delivery).await;
        stop_servers.cancel();
        let _ = tokio::time::timeout(config.shutdown_grace, http_server).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), grpc_server).await;
        housekeeping.abort();
        info!("alerting stopped");
        consumed
    }
}

/// Alerting's side of the shared consume loop ([`cxgap_bus::consume`]).
struct Signals<'a, F> {
    processor: &'a Processor,
    metrics: &'a Metrics,
    /// Wakes the streams and the deliverer after a committed batch.
    committed: F,
}

impl<F: Fn() + Send + Sync> PartitionProcessor for Signals<'_, F> {
    type Stats = BatchStats;
    type Error = StoreError;

    fn topic(&self) -> &str {
        &self.processor.config.topic
    }

    async fn stored_offset(&self, partition: i32) -> Result<Option<i64>, StoreError> {
        let c = &self.processor.config;
        self.processor.store.next_offset(&c.group, &c.topic, partition).await
    }

    async fn process(&self, partition: i32, records: &[Consumed], accept_gap: bool) -> Result<BatchStats, StoreError> {
        self.processor.process_batch(partition, records, accept_gap).await
    }

    async fn process_group(&self, parts: &[(i32, &[Consumed])]) -> Option<Result<BatchStats, StoreError>> {
        Some(self.processor.process_group(parts).await)
    }

    fn failure(error: &StoreError) -> Failure {
        match error {
            StoreError::Gap(gap) => Failure::Gap(*gap),
            StoreError::Fenced { .. } => Failure::Fenced,
            _ => Failure::Retry,
        }
    }

    fn advanced(stats: &BatchStats) -> bool {
        stats.replayed < stats.records
    }

    fn committed(&self, _partition: i32, stats: &BatchStats, took: Duration) {
        self.metrics.batch(stats, took);
        (self.committed)();
    }
}

/// Alerts-by-state gauges every 15 s; forgetting signal ids past the dedup window hourly.
async fn housekeeping(store: AlertStore, metrics: Metrics, shutdown: Shutdown) {
    let mut tick = 0u64;
    loop {
        if let Ok(counts) = store.alert_counts().await {
            for state in ["firing", "acknowledged", "resolved"] {
                let n = counts.get(state).copied().unwrap_or(0);
                metrics.alerts.get_or_create(&StateLabel { state: state.into() }).set(n);
            }
        }
        if tick.is_multiple_of(240) {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            if let Err(e) = store.prune_seen(now - SEEN_WINDOW.as_millis() as i64).await {
                warn!(error = %e, "pruning seen signal ids failed");
            }
            if let Err(e) = store.prune_risk(now - crate::processor::RISK_HISTORY_MS).await {
                warn!(error = %e, "pruning old risk points failed");
            }
        }
        tick += 1;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}
