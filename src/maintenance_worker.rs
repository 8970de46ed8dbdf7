//! The maintenance background worker: with memmie in `shared_preload_libraries`, one worker
//! process runs `memmie.maintenance()` in `memmie.maintenance_database` every
//! `memmie.maintenance_interval` (0 turns it off without a restart). The alternative without a
//! preload is pg_cron (`memmie.schedule_maintenance()`).
//!
//! An error in `maintenance()` ends the worker process (the error is in the server log), and so
//! does `pg_terminate_backend`; the postmaster starts it again after a minute.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::guc;

/// When no interval is set, the worker still wakes this often to notice a reload.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Registers the worker and its database setting (src/guc.rs); only while
/// shared_preload_libraries are loaded (a postmaster-level setting cannot be defined later).
pub fn register_worker() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    guc::register_preload();
    BackgroundWorkerBuilder::new("memmie maintenance")
        .set_type("memmie maintenance")
        .set_library("memmie")
        .set_function("memmie_maintenance_worker_main")
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(60)))
        .load();
}

fn interval() -> Option<Duration> {
    u64::try_from(guc::maintenance_interval_seconds())
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn memmie_maintenance_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = guc::maintenance_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("memmie maintenance worker started in database \"{database}\"");
    let mut said_missing = false;
    while BackgroundWorker::wait_latch(Some(interval().unwrap_or(IDLE_WAIT))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            continue; // a new interval starts now
        }
        if interval().is_none() {
            continue;
        }
        // The worker runs as a superuser: under the pinned search_path, and naming every object
        // with its schema, so nothing another role created in the database runs here.
        let report = BackgroundWorker::transaction(|| {
            crate::plans::with_pinned_search_path(|| {
                let installed = Spi::get_one::<bool>(
                    "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'memmie')",
                )
                .ok()
                .flatten()
                .unwrap_or(false);
                if !installed {
                    return None;
                }
                Spi::get_one::<String>("SELECT memmie.maintenance()::pg_catalog.text")
                    .ok()
                    .flatten()
            })
        });
        match report {
            Some(r) => {
                said_missing = false;
                log!("memmie maintenance: {r}");
            }
            None if !said_missing => {
                said_missing = true;
                warning!("memmie maintenance worker: memmie is not installed in database \"{database}\"; waiting");
            }
            None => {}
        }
    }
    log!("memmie maintenance worker stopped");
    // Exit code 1: when the worker was terminated by hand (pg_terminate_backend, e.g. to load a
    // new build), the postmaster starts it again after the restart time; at shutdown nothing is
    // restarted. (Exit code 0 would unregister it until the next server start.)
    unsafe { pg_sys::proc_exit(1) };
}
