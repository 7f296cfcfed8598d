//! `[server] run_every`: the server runs the models itself (what `rapport run` does,
//! with the `[models]` and `[actions]` settings of its configuration) on a schedule. The
//! run commits like any writer; the reads switch to its results at the next request
//! (the customer index is rebuilt when the catalog changes), and posted records keep
//! being taken meanwhile (they wait for the run to flush).

use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use rapport_engine::config::ModelsConfig;
use rapport_engine::run::actions::ActionsConfig;
use rapport_store::{StoreError, Workspace};

/// What a scheduled run uses.
#[derive(Debug, Clone)]
pub struct RunSchedule {
    pub every: Duration,
    pub models: ModelsConfig,
    pub actions: ActionsConfig,
}

/// The thread that runs the models every `every`, until closed.
pub struct Scheduler {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Scheduler {
    pub fn start(workspace: &Path, schedule: RunSchedule) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let root = workspace.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("run-every".into())
            .spawn(move || {
                // Every `every` from the end of the last run, until the sender goes.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(schedule.every) {
                    run_once(&root, &schedule);
                }
            })
            .map_err(|e| StoreError::io(workspace, e))?;
        Ok(Scheduler {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the schedule; a run under way finishes first.
    pub fn close(&self) {
        self.stop.lock().expect("schedule").take();
        if let Some(t) = self.thread.lock().expect("schedule").take() {
            let _ = t.join();
        }
    }
}

/// One scheduled run; a workspace another writer holds for over a minute is left for
/// the next time.
fn run_once(root: &Path, schedule: &RunSchedule) {
    let who = rapport_store::workspace::Writer::new("serve (run_every)").waiting(Duration::from_secs(60));
    let ws = match Workspace::writer(root, &who) {
        Ok(ws) => ws,
        Err(StoreError::Locked(m)) => {
            tracing::warn!(holder = %m, "scheduled run skipped: the workspace is busy");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "scheduled run failed");
            return;
        }
    };
    let started = std::time::Instant::now();
    match rapport_engine::run::run_with(&ws, &schedule.models, &schedule.actions, None) {
        Ok(s) => tracing::info!(
            as_of = %s.as_of,
            customers = s.customers,
            seconds = started.elapsed().as_secs_f64(),
            "scheduled run committed"
        ),
        Err(e) => tracing::error!(error = %e, "scheduled run failed"),
    }
}
