//! Where a command's queries run: the one factory of DataFusion contexts.
//!
//! Locally (the default) a context runs in this process under a memory limit: sorts,
//! joins and aggregations that would hold more spill to disk. With a cluster
//! (`[engine] url = "df://host:50050"` or `--engine`) the same SQL is planned by a
//! Ballista scheduler and run by its executors, which read the workspace's Parquet
//! parts by path (a filesystem they share with the command). The per-customer results
//! come back to the command, where the models run. Rapport's own functions
//! (`mask_pii`) are registered in the scheduler and executors `rapport scheduler` and
//! `rapport executor` start; the workspace key never leaves the command, so a query
//! that reveals personal columns runs locally.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use rapport_store::config::{check_engine_url, EngineConfig};

use crate::{EngineError, Result};

/// Where queries run, and with how much memory.
#[derive(Debug, Default)]
pub struct Engine {
    cluster: Option<Cluster>,
    memory_limit: Option<u64>,
    spill_dir: Option<PathBuf>,
    runtime: OnceLock<Arc<RuntimeEnv>>,
}

/// A Ballista scheduler's address.
#[derive(Debug, Clone)]
struct Cluster {
    url: String,
    host: String,
    port: u16,
}

impl Engine {
    /// Queries in this process, memory limit and spill folder as defaults.
    pub fn local() -> Self {
        Self::default()
    }

    /// The settings of `[engine]`, each overridden by a flag when given.
    pub fn new(config: &EngineConfig, url: Option<&str>, memory_limit: Option<u64>) -> Result<Self> {
        let url = url.or(config.url.as_deref());
        let cluster = match url {
            None | Some("") | Some("local") => None,
            Some(u) => {
                let (host, port) = check_engine_url(u).map_err(|m| EngineError::usage(format!("--engine {u}: {m}")))?;
                Some(Cluster {
                    url: u.to_string(),
                    host,
                    port,
                })
            }
        };
        Ok(Engine {
            cluster,
            memory_limit: memory_limit.or(config.memory_limit.map(|b| b.0)),
            spill_dir: config.spill_dir.clone(),
            runtime: OnceLock::new(),
        })
    }

    /// A cluster's scheduler (`df://host:port`), if queries go to one.
    pub fn cluster_url(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.url.as_str())
    }

    /// The bytes local queries may hold before they spill.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit.unwrap_or_else(default_memory_limit)
    }

    /// The runtime every local context of this engine shares: one memory pool for the
    /// whole command, however many contexts it opens.
    fn runtime(&self) -> Result<Arc<RuntimeEnv>> {
        if let Some(r) = self.runtime.get() {
            return Ok(r.clone());
        }
        let limit = usize::try_from(self.memory_limit()).unwrap_or(usize::MAX);
        let mut builder = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        if let Some(dir) = &self.spill_dir {
            std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
            builder = builder.with_temp_file_path(dir);
        }
        let runtime = builder.build_arc()?;
        Ok(self.runtime.get_or_init(|| runtime).clone())
    }

    /// A context for one way of showing the workspace: on the cluster when there is
    /// one and `local_only` is false, else in this process.
    pub async fn context(&self, local_only: bool) -> Result<SessionContext> {
        match &self.cluster {
            Some(c) if !local_only => cluster_context(c).await,
            _ => self.local_context(),
        }
    }

    /// A context in this process, whatever the engine's cluster.
    pub fn local_context(&self) -> Result<SessionContext> {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(session_config())
            .with_runtime_env(self.runtime()?)
            .build();
        let ctx = SessionContext::new_with_state(state);
        register_functions(&ctx);
        Ok(ctx)
    }
}

fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_target_partitions(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    // Parquet strings as plain strings, not views: a view array taken through a join
    // keeps every buffer of the side it came from, and a sort downstream counts those
    // shared buffers once per batch — an estimate that grows with each join until no
    // memory limit admits it.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    config
}

/// Rapport's own SQL functions, in every context, scheduler and executor.
fn functions() -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
    vec![Arc::new(crate::session::mask_udf())]
}

fn register_functions(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf((*f).clone());
    }
}

/// Half the memory this process may use: the machine's, or its control group's limit
/// when that is lower.
pub fn default_memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let available = match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    };
    available / 2
}

/// A context whose queries the cluster's scheduler plans and its executors run. The
/// scheduler is asked first, so an unreachable one is a clear error at once rather
/// than a failure inside the first query.
async fn cluster_context(c: &Cluster) -> Result<SessionContext> {
    use ballista::prelude::SessionContextExt;
    let address = format!("{}:{}", c.host, c.port);
    let reach = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect(&address)).await;
    match reach {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(EngineError::usage(format!(
                "the Ballista scheduler at {} did not answer ({e}); start one with `rapport scheduler` or run without --engine",
                c.url
            )))
        }
        Err(_) => {
            return Err(EngineError::usage(format!(
                "the Ballista scheduler at {} did not answer within 10 s",
                c.url
            )))
        }
    }
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(session_config())
        .build();
    let ctx = SessionContext::remote_with_state(&format!("df://{address}"), state).await?;
    // The static distributed planner: the adaptive one (Ballista's default) loses track
    // of a stage it resubmits after an executor is lost, and the job then never ends.
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .set("ballista.planner.adaptive.enabled", "false")?;
    register_functions(&ctx);
    Ok(ctx)
}

/// The session every scheduler of Rapport's plans with: Ballista's own, plus Rapport's
/// functions.
fn scheduler_session(config: SessionConfig) -> datafusion::common::Result<datafusion::execution::SessionState> {
    use datafusion::execution::FunctionRegistry;
    let mut state = ballista_core::utils::default_session_builder(config)?;
    for f in functions() {
        state.register_udf(f)?;
    }
    Ok(state)
}

/// The functions an executor of Rapport's knows: DataFusion's and Rapport's.
fn executor_functions() -> ballista_core::registry::BallistaFunctionRegistry {
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    for f in functions() {
        registry.scalar_functions.insert(f.name().to_string(), f);
    }
    registry
}

/// Seconds without a heartbeat after which the scheduler gives an executor up (and
/// reruns or fails its tasks).
const EXECUTOR_TIMEOUT_SECONDS: u64 = 20;
const HEARTBEAT_SECONDS: u64 = 3;

fn scheduler_config(bind: std::net::SocketAddr) -> ballista_scheduler::config::SchedulerConfig {
    let mut config = ballista_scheduler::config::SchedulerConfig::default()
        .with_hostname(bind.ip().to_string())
        .with_port(bind.port())
        .with_scheduler_policy(ballista_core::config::TaskSchedulingPolicy::PullStaged)
        .with_override_session_builder(Arc::new(scheduler_session));
    config.bind_host = bind.ip().to_string();
    config.executor_timeout_seconds = EXECUTOR_TIMEOUT_SECONDS;
    config.expire_dead_executor_interval_seconds = HEARTBEAT_SECONDS;
    // A stage whose input was on a lost executor is not run again: the job fails (rows
    // were lost when Ballista resubmitted part of a map stage).
    config.stage_max_failures = 1;
    config
}

type Scheduler = ballista_scheduler::scheduler_server::SchedulerServer<
    datafusion_proto::protobuf::LogicalPlanNode,
    datafusion_proto::protobuf::PhysicalPlanNode,
>;

/// Starts a scheduler of Rapport's listening on `bind` and serves until it fails.
async fn run_scheduler(bind: std::net::SocketAddr) -> Result<()> {
    let config = Arc::new(scheduler_config(bind));
    config.validate().map_err(ballista_error)?;
    let memory = ballista_scheduler::cluster::BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error)?;
    let scheduler = Arc::new(std::sync::OnceLock::new());
    let cluster = ballista_scheduler::cluster::BallistaCluster::new(
        Arc::new(FailJobsOnExecutorLoss {
            inner: memory.cluster_state(),
            scheduler: scheduler.clone(),
        }),
        memory.job_state(),
    );
    let server: Scheduler = ballista_scheduler::scheduler_process::create_scheduler(cluster, config)
        .await
        .map_err(ballista_error)?;
    let _ = scheduler.set(server.clone());
    tracing::info!(%bind, "Ballista scheduler listening");
    ballista_scheduler::scheduler_process::start_grpc_service(bind, server)
        .await
        .map_err(ballista_error)
}

/// Ballista's in-memory cluster state, except that when an executor is lost (no
/// heartbeat for [`EXECUTOR_TIMEOUT_SECONDS`], or stopped) every job under way is
/// cancelled before Ballista reschedules anything: the commands' queries then fail
/// with an error, and a command writes nothing. Left to itself, Ballista 55 reruns the
/// lost executor's part of a job, and a run completed that way lost rows.
struct FailJobsOnExecutorLoss {
    inner: Arc<dyn ballista_scheduler::cluster::ClusterState>,
    scheduler: Arc<std::sync::OnceLock<Scheduler>>,
}

#[async_trait::async_trait]
impl ballista_scheduler::cluster::ClusterState for FailJobsOnExecutorLoss {
    async fn init(&self) -> ballista_core::error::Result<()> {
        self.inner.init().await
    }

    async fn bind_schedulable_tasks(
        &self,
        distribution: ballista_scheduler::config::TaskDistributionPolicy,
        active_jobs: Arc<std::collections::HashMap<ballista_core::JobId, ballista_scheduler::state::task_manager::JobInfoCache>>,
        executors: Option<std::collections::HashSet<String>>,
    ) -> ballista_core::error::Result<Vec<ballista_scheduler::cluster::BoundTask>> {
        self.inner.bind_schedulable_tasks(distribution, active_jobs, executors).await
    }

    async fn unbind_tasks(&self, executor_slots: Vec<ballista_scheduler::cluster::ExecutorSlot>) -> ballista_core::error::Result<()> {
        self.inner.unbind_tasks(executor_slots).await
    }

    async fn register_executor(
        &self,
        metadata: ballista_core::serde::scheduler::ExecutorMetadata,
        spec: ballista_core::serde::scheduler::ExecutorData,
    ) -> ballista_core::error::Result<()> {
        self.inner.register_executor(metadata, spec).await
    }

    async fn save_executor_metadata(
        &self,
        metadata: ballista_core::serde::scheduler::ExecutorMetadata,
    ) -> ballista_core::error::Result<()> {
        self.inner.save_executor_metadata(metadata).await
    }

    async fn get_executor_metadata(
        &self,
        executor_id: &str,
    ) -> ballista_core::error::Result<ballista_core::serde::scheduler::ExecutorMetadata> {
        self.inner.get_executor_metadata(executor_id).await
    }

    async fn registered_executor_metadata(&self) -> Vec<ballista_core::serde::scheduler::ExecutorMetadata> {
        self.inner.registered_executor_metadata().await
    }

    async fn save_executor_heartbeat(
        &self,
        heartbeat: ballista_core::serde::protobuf::ExecutorHeartbeat,
    ) -> ballista_core::error::Result<()> {
        self.inner.save_executor_heartbeat(heartbeat).await
    }

    async fn remove_executor(&self, executor_id: &str) -> ballista_core::error::Result<()> {
        let removed = self.inner.remove_executor(executor_id).await;
        if let Some(scheduler) = self.scheduler.get() {
            // Posted before Ballista's own executor-lost event, so no job gets the
            // chance to rerun the lost part.
            for job_id in scheduler.state.task_manager.get_running_job_cache().keys() {
                tracing::warn!(executor = executor_id, job = %job_id, "executor lost: cancelling the job under way");
                if let Err(e) = scheduler.cancel_job(job_id.clone()).await {
                    tracing::error!(job = %job_id, "could not cancel the job: {e}");
                }
            }
        }
        removed
    }

    fn executor_heartbeats(&self) -> std::collections::HashMap<String, ballista_core::serde::protobuf::ExecutorHeartbeat> {
        self.inner.executor_heartbeats()
    }

    fn get_executor_heartbeat(&self, executor_id: &str) -> Option<ballista_core::serde::protobuf::ExecutorHeartbeat> {
        self.inner.get_executor_heartbeat(executor_id)
    }

    async fn cluster_state_events(&self) -> ballista_core::error::Result<ballista_scheduler::cluster::ClusterStateEventStream> {
        self.inner.cluster_state_events().await
    }
}

/// `rapport scheduler`: plans the queries commands send and hands their tasks to the
/// executors; runs until the process is stopped.
pub fn serve_scheduler(bind: std::net::SocketAddr) -> Result<()> {
    crate::block_on(run_scheduler(bind))
}

/// What an executor is told at start.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `df://host:port`.
    pub scheduler: String,
    /// Where the executor listens for other executors' and the command's fetches.
    pub bind: std::net::SocketAddr,
    /// Where it keeps the intermediate results of its tasks.
    pub work_dir: Option<PathBuf>,
    /// Tasks at once (default: the machine's cores).
    pub concurrent_tasks: Option<usize>,
    /// The memory its queries may hold before spilling.
    pub memory_limit: Option<u64>,
}

/// Ballista's execution engine with the tasks' per-operator metrics left out of their
/// reports. The scheduler merges a stage's metrics operator by operator and, when two
/// tasks of one stage report plans of different sizes (Ballista plans some tasks
/// adaptively), it drops the task's status update, and the job then waits forever.
/// Rapport shows no per-operator metrics, so its executors do not report them.
struct WithoutOperatorMetrics(ballista_executor::execution_engine::DefaultExecutionEngine);

impl ballista_executor::execution_engine::ExecutionEngine for WithoutOperatorMetrics {
    fn create_query_stage_exec(
        &self,
        job_id: ballista_core::JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> datafusion::common::Result<Arc<dyn ballista_executor::execution_engine::QueryStageExecutor>> {
        let inner = self
            .0
            .create_query_stage_exec(job_id, stage_id, task_id, global_output_partition_ids, plan, work_dir, config)?;
        Ok(Arc::new(StageWithoutOperatorMetrics(inner)))
    }
}

struct StageWithoutOperatorMetrics(Arc<dyn ballista_executor::execution_engine::QueryStageExecutor>);

impl std::fmt::Debug for StageWithoutOperatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for StageWithoutOperatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

#[async_trait::async_trait]
impl ballista_executor::execution_engine::QueryStageExecutor for StageWithoutOperatorMetrics {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::common::Result<Vec<ballista_core::serde::protobuf::ShuffleWritePartition>> {
        self.0.execute_query_stage(task_id, context).await
    }

    fn collect_plan_metrics(&self) -> Vec<datafusion::physical_plan::metrics::MetricsSet> {
        Vec::new()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.0.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> datafusion::common::Result<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        self.0.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<ballista_core::serde::protobuf::TaskColumnStats> {
        self.0.collect_column_stats()
    }
}

fn executor_config(o: &ExecutorOptions) -> Result<ballista_executor::executor_process::ExecutorProcessConfig> {
    let (host, port) = check_engine_url(&o.scheduler).map_err(|m| EngineError::usage(format!("--scheduler {}: {m}", o.scheduler)))?;
    let mut config = ballista_executor::executor_process::ExecutorProcessConfig {
        bind_host: o.bind.ip().to_string(),
        port: o.bind.port(),
        grpc_port: o.bind.port().checked_add(1).unwrap_or(o.bind.port() - 1),
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 30,
        task_scheduling_policy: ballista_core::config::TaskSchedulingPolicy::PullStaged,
        work_dir: o.work_dir.as_ref().map(|p| p.to_string_lossy().into_owned()),
        special_mod_log_level: "WARN".into(),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: HEARTBEAT_SECONDS,
        memory_pool_size: o.memory_limit,
        override_function_registry: Some(Arc::new(executor_functions())),
        override_execution_engine: Some(Arc::new(WithoutOperatorMetrics(
            ballista_executor::execution_engine::DefaultExecutionEngine::new(),
        ))),
        ..Default::default()
    };
    if let Some(n) = o.concurrent_tasks {
        config.vcores = n.max(1);
    }
    Ok(config)
}

/// `rapport executor`: registers with the scheduler and runs the tasks it is given
/// until the process is stopped.
pub fn serve_executor(options: &ExecutorOptions) -> Result<()> {
    let config = executor_config(options)?;
    if let Some(dir) = &options.work_dir {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    crate::block_on(async move {
        ballista_executor::executor_process::start_executor_process(Arc::new(config))
            .await
            .map_err(ballista_error)
    })
}

/// A scheduler and `executors` executors in this process, on free local ports: the
/// tests' cluster (the same scheduler and executors as the commands', without the
/// processes). Returns the scheduler's `df://` address; they run until the process ends.
pub fn start_local_cluster(executors: usize) -> Result<String> {
    crate::block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| EngineError::io(std::path::Path::new("127.0.0.1:0"), e))?;
        let bind = listener
            .local_addr()
            .map_err(|e| EngineError::io(std::path::Path::new("127.0.0.1:0"), e))?;
        drop(listener);
        tokio::spawn(async move {
            if let Err(e) = run_scheduler(bind).await {
                tracing::error!("the in-process scheduler stopped: {e}");
            }
        });
        let url = format!("df://127.0.0.1:{}", bind.port());
        while tokio::net::TcpStream::connect(bind).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        for _ in 0..executors {
            let bind = free_port_pair().map_err(|e| EngineError::io(std::path::Path::new("127.0.0.1"), e))?;
            let mut config = executor_config(&ExecutorOptions {
                scheduler: url.clone(),
                bind,
                work_dir: None,
                concurrent_tasks: Some(2),
                memory_limit: None,
            })?;
            config.special_mod_log_level = "ERROR".into();
            tokio::spawn(async move {
                if let Err(e) = ballista_executor::executor_process::start_executor_process(Arc::new(config)).await {
                    tracing::error!("an in-process executor stopped: {e}");
                }
            });
        }
        Ok(url)
    })
}

/// A local address whose port and the next one are free (an executor listens on both).
pub fn free_port_pair() -> std::io::Result<std::net::SocketAddr> {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        if a.port() < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", a.port() + 1)).is_ok() {
            return Ok(a);
        }
    }
}

fn ballista_error(e: ballista_core::error::BallistaError) -> EngineError {
    crate::InternalError::Query(datafusion::error::DataFusionError::External(Box::new(e))).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_takes_flags_over_the_config() {
        let config = EngineConfig {
            url: Some("df://sched:7000".into()),
            memory_limit: Some(rapport_store::config::ByteSize(1 << 30)),
            spill_dir: None,
        };
        let e = Engine::new(&config, None, None).unwrap();
        assert_eq!((e.cluster_url(), e.memory_limit()), (Some("df://sched:7000"), 1 << 30));
        let e = Engine::new(&config, Some("local"), Some(2 << 30)).unwrap();
        assert_eq!((e.cluster_url(), e.memory_limit()), (None, 2 << 30));
        let bad = Engine::new(&EngineConfig::default(), Some("http://x:1"), None).unwrap_err();
        assert!(bad.is_user_error() && bad.to_string().contains("df://"), "{bad}");
        assert!(Engine::local().memory_limit() >= 64 << 20);
    }

    /// Left joins of per-customer aggregates, sorted by the customer id: the shape of the
    /// features query. Parquet strings read as views would share their buffers through
    /// every join, and the sort would count those buffers once per batch at each level
    /// (tens of GB for 100k ids, refused under any limit); read as plain strings the
    /// query runs under a small one.
    #[test]
    fn joined_aggregates_of_many_string_ids_sort_under_a_small_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.parquet");
        let engine = Engine::new(&EngineConfig::default(), None, Some(256 << 20)).unwrap();
        let ctx = engine.local_context().unwrap();
        let rows = crate::block_on(async {
            let copy = format!(
                "COPY (SELECT 'customer-' || lpad(CAST(value % 100000 AS VARCHAR), 14, '0') AS id, value AS n
                       FROM generate_series(1, 300000)) TO '{}' STORED AS PARQUET",
                file.display()
            );
            ctx.sql(&copy).await?.collect().await?;
            crate::session::register(&ctx, "t", vec![file.clone()], &crate::session::Personal::Stored).await?;
            let sql = "WITH a AS (SELECT id, count(*) AS k FROM t GROUP BY id),
                            b AS (SELECT id, min(n) AS lo FROM t GROUP BY id),
                            c AS (SELECT id, max(n) AS hi FROM t GROUP BY id),
                            d AS (SELECT id, sum(n) AS s FROM t GROUP BY id),
                            e AS (SELECT DISTINCT id FROM t)
                       SELECT e.id, a.k, b.lo, c.hi, d.s FROM e LEFT JOIN a ON a.id = e.id LEFT JOIN b ON b.id = e.id
                              LEFT JOIN c ON c.id = e.id LEFT JOIN d ON d.id = e.id ORDER BY e.id";
            let batches = ctx.sql(sql).await?.collect().await?;
            Ok::<_, EngineError>(batches.iter().map(|b| b.num_rows()).sum::<usize>())
        })
        .unwrap();
        assert_eq!(rows, 100_000);
    }

    #[test]
    fn an_unreachable_scheduler_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = Engine::new(&EngineConfig::default(), Some(&format!("df://127.0.0.1:{port}")), None).unwrap();
        let Err(err) = crate::block_on(e.context(false)) else {
            panic!("no scheduler listens on port {port}")
        };
        assert!(err.to_string().contains("did not answer"), "{err}");
        assert!(crate::block_on(e.context(true)).is_ok(), "a local-only context needs no scheduler");
    }
}
