//! The judge: takes what the sources saw, groups it per model until the writers are
//! done (a close, an exit, or a quiet moment), re-hashes only the touched files, and
//! writes one `integrity` record per change with who, what, when, the re-hash result
//! and the verdict; an unapproved change is also an `anomaly`. It also runs the startup
//! and periodic re-verifications, and records execs of approved binaries.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lucid_common::probe::Op;
use lucid_common::record::{Entry, Kind, Severity};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::procs::{Proc, Procs};
use super::{touched_in, Input, Seen, Source, Who};
use super::plan::WatchPlan;
use crate::config::values::WatchMode;
use crate::daemon::state::AppState;
use crate::integrity::approvals::{LastChange, Verification};
use crate::integrity::verify::{check, Touched};

/// A change is judged once its writers closed and nothing more came for this long
/// (a rename-over or a delete-and-create lands in one record).
const QUIET: Duration = Duration::from_millis(5);
/// ...or this long after it began, whatever the writers do.
const PATIENCE: Duration = Duration::from_secs(5);
/// How often the periodic mode looks at file stamps.
const STAT_EVERY: Duration = Duration::from_secs(2);

/// One operation within a change.
struct Step {
    op: Op,
    paths: Vec<PathBuf>,
    actor: Value,
    who: Who,
    time_ns: u64,
}

/// A change being gathered for one model.
struct Pending {
    /// Touched relative names and byte ranges; `None`: the whole model.
    touched: Option<Touched>,
    steps: Vec<Step>,
    /// (pid, path) of files open for writing.
    open: HashSet<(u32, PathBuf)>,
    first: Instant,
    last: Instant,
    /// Why, when nothing was seen (startup, periodic, lost events).
    trigger: Option<String>,
}

impl Pending {
    fn new(trigger: Option<String>) -> Pending {
        Pending { touched: Some(Touched::new()), steps: Vec::new(), open: HashSet::new(), first: Instant::now(), last: Instant::now(), trigger }
    }

    fn touch(&mut self, t: Option<Touched>) {
        match (&mut self.touched, t) {
            (Some(have), Some(more)) => {
                for (name, range) in more {
                    let merged = match (have.get(&name), range) {
                        // A range widens an earlier one; the whole file stays whole.
                        (Some(Some((lo, hi))), Some((l, h))) => Some(((*lo).min(l), (*hi).max(h))),
                        (Some(_), _) => None,
                        (None, r) => r,
                    };
                    have.insert(name, merged);
                }
            }
            (touched, _) => *touched = None,
        }
    }

    /// When it is to be judged.
    fn due(&self) -> Instant {
        let patience = self.first + PATIENCE;
        if self.open.is_empty() {
            (self.last + QUIET).min(patience)
        } else {
            patience
        }
    }
}

/// Starts the watch with `plan`: the judge runs until the daemon stops, and picks its
/// source again whenever a new plan arrives ([`super::Watch::replan`]).
pub fn spawn(state: Arc<AppState>, plan: WatchPlan) {
    let (tx, rx) = mpsc::unbounded_channel();
    if state.watch.tx.set(tx.clone()).is_err() {
        return;
    }
    state.watch.update(|i| i.mode = "starting".into());
    let _ = tx.send(Input::Refresh);
    if plan.enabled && plan.check_on_startup {
        let _ = tx.send(Input::VerifyAll("startup"));
    }
    tokio::spawn(async move {
        let mut judge = Judge {
            state,
            tx,
            source: None,
            mode: String::new(),
            plan: None,
            next_full: None,
            procs: Procs::default(),
            pending: HashMap::new(),
            stamps: HashMap::new(),
        };
        judge.apply(plan).await;
        judge.run(rx).await;
    });
}

/// The best source this host allows under `mode`: eBPF, else fanotify, else none
/// (periodic re-verification only); with the mode's name and what failed before it.
fn pick(
    mode: WatchMode,
    set: Arc<std::sync::RwLock<super::WatchSet>>,
    tx: mpsc::UnboundedSender<Input>,
    enforce: Option<Vec<PathBuf>>,
) -> (Option<Box<dyn Source>>, String, String) {
    let mut notes = Vec::new();
    if matches!(mode, WatchMode::Auto | WatchMode::Ebpf) {
        match super::ebpf::start(set.clone(), tx.clone(), enforce) {
            Ok(s) => {
                let (mode, why) = (format!("ebpf-{}", s.family().name()), s.why().to_string());
                return (Some(Box::new(s)), mode, why);
            }
            Err(e) => notes.push(format!("eBPF: {e}")),
        }
    }
    if mode == WatchMode::Periodic {
        return (None, "periodic".into(), "INTEGRITY_WATCH_MODE is periodic".into());
    }
    match super::fanotify::start(tx.clone()) {
        Ok(s) => match super::ebpf::start_processes(set, tx) {
            Ok(p) => (Some(Box::new(WithProcesses { files: s, processes: p })), "fanotify+ebpf-exec".into(), notes.join("; ")),
            Err(e) => {
                notes.push(format!("eBPF process events: {e}"));
                (Some(Box::new(s)), "fanotify".into(), notes.join("; "))
            }
        },
        Err(e) => {
            notes.push(format!("fanotify: {e}"));
            (None, "periodic".into(), notes.join("; "))
        }
    }
}

/// fanotify for the files, with eBPF's process events (exec, exit, fork) so that a
/// change's writer is named even when it has exited before its event is read.
struct WithProcesses {
    files: super::fanotify::FanotifySource,
    /// Keeps the process programs attached; its watch maps flag approved binaries' execs.
    processes: super::ebpf::EbpfSource,
}

impl Source for WithProcesses {
    fn watch(&mut self, set: &super::WatchSet) -> Result<(), String> {
        self.processes.watch(set)?;
        self.files.watch(set)
    }
}

/// How long a verdict waits for the exec event of a writer fanotify named only by pid.
const WAIT_FOR_EXEC: Duration = Duration::from_millis(250);

/// What a file's `stat` says that any change of contents or attributes moves: (inode,
/// size, mtime ns, ctime ns, mode, uid, gid). ctime cannot be set from user space.
type Stamp = (u64, u64, i64, i64, u32, u32, u32);

struct Judge {
    state: Arc<AppState>,
    /// Where sources send what they see (kept to start new ones).
    tx: mpsc::UnboundedSender<Input>,
    source: Option<Box<dyn Source>>,
    mode: String,
    /// The plan in force (`None` before the first).
    plan: Option<WatchPlan>,
    /// When the next full re-verification is due (`None` while the watch is off).
    next_full: Option<Instant>,
    procs: Procs,
    pending: HashMap<String, Pending>,
    /// Periodic mode: each approved file's stamp.
    stamps: HashMap<PathBuf, Stamp>,
}

impl Judge {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut stat = tokio::time::interval(STAT_EVERY);
        let later = || Instant::now() + Duration::from_secs(3600);
        loop {
            let due = self.pending.values().map(Pending::due).min();
            let wake = tokio::time::Instant::from_std(due.unwrap_or_else(later));
            let full = tokio::time::Instant::from_std(self.next_full.unwrap_or_else(later));
            let watching = self.plan.as_ref().is_some_and(|p| p.enabled);
            tokio::select! {
                input = rx.recv() => match input {
                    Some(i) => self.handle(i).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(wake), if due.is_some() => self.flush().await,
                _ = tokio::time::sleep_until(full), if self.next_full.is_some() => {
                    self.verify_all("periodic");
                    self.next_full = self.plan.as_ref().map(|p| Instant::now() + p.recheck);
                }
                _ = stat.tick(), if self.source.is_none() && watching => self.stat_scan(),
            }
        }
    }

    /// Puts `plan` in force: the source is picked again (the old one is dropped first,
    /// and everything re-verified after, so a change made between the two is judged),
    /// and the new state recorded when enforcement or the watch's presence changed.
    async fn apply(&mut self, plan: WatchPlan) {
        // A plan after the first: whatever happened while the watch switched (or was
        // off) is caught by re-verifying everything once the new one is in force.
        let restart = self.plan.is_some();
        if !plan.enabled {
            self.source = None;
            self.next_full = None;
            self.mode = "off".into();
            self.state.watch.update(|i| {
                i.mode = "off".into();
                i.detail = "MODEL_INTEGRITY_CHECK is false for every agent".into();
                i.enforcement = "off".into();
            });
            if self.plan.as_ref().is_some_and(|p| p.enabled) {
                let body = json!({ "event": "watch_off", "why": "MODEL_INTEGRITY_CHECK is false for every agent", "model": "models" });
                self.append(Kind::Integrity, Severity::Warning, "integrity-watch", body).await;
            }
            self.plan = Some(plan);
            self.state.watch.set_plan(self.plan.clone());
            return;
        }
        // Loading and verifying the programs takes a while: off the runtime's workers. The
        // old source stays attached (and enforcing) until the new one is, so no write
        // goes unrefused between them; events both report in the meantime are judged
        // once, as one change.
        let (set, tx, mode, enforce) = (self.state.watch.set.clone(), self.tx.clone(), plan.mode, plan.enforce.clone());
        let wanted_enforcement = enforce.is_some();
        let picked = tokio::task::spawn_blocking(move || pick(mode, set, tx, enforce)).await;
        let (source, mode, detail) = picked.unwrap_or_else(|e| (None, "periodic".into(), format!("starting the watch failed: {e}")));
        if mode.starts_with("ebpf-") || (source.is_some() && detail.is_empty()) {
            // For ebpf-fentry and ebpf-tracepoint, `detail` says why the better families
            // were refused.
            tracing::info!(mode = %mode, refused = %detail, "model watch started");
        } else {
            tracing::warn!(mode = %mode, why = %detail, "model watch is not using eBPF");
        }
        let enforcement = match (&source, wanted_enforcement) {
            (_, false) => "off".to_string(),
            (Some(s), true) => s.enforcement(),
            (None, true) => "unavailable: it needs the eBPF programs".to_string(),
        };
        self.state.watch.update(|i| {
            i.mode = mode.clone();
            i.detail = detail.clone();
            i.enforcement = enforcement.clone();
        });
        if wanted_enforcement {
            let ok = enforcement.starts_with("on");
            let body = json!({ "event": if ok { "enforcement_on" } else { "enforcement_unavailable" }, "enforcement": enforcement, "mode": mode, "model": "models" });
            self.append(Kind::Integrity, if ok { Severity::Notice } else { Severity::Warning }, "integrity-watch", body).await;
            if !ok {
                tracing::warn!(why = %enforcement, "INTEGRITY_ENFORCE is set but writes cannot be refused on this host");
            }
        }
        if self.plan.is_some() {
            let body = json!({
                "event": "watch_restarted",
                "mode": mode,
                "detail": detail,
                "enforcement": enforcement,
                "recheck_minutes": plan.recheck.as_secs() / 60,
                "model": "models",
            });
            self.append(Kind::Integrity, Severity::Notice, "integrity-watch", body).await;
        }
        self.source = source;
        self.mode = mode;
        self.next_full = Some(Instant::now() + plan.recheck);
        self.plan = Some(plan);
        self.state.watch.set_plan(self.plan.clone());
        self.refresh();
        if restart {
            self.verify_all("watch restarted");
        }
    }

    fn refresh(&mut self) {
        let set = super::WatchSet::build(&self.state.models.all());
        if let Some(src) = self.source.as_mut() {
            if let Err(e) = src.watch(&set) {
                tracing::error!(error = %e, "could not update the model watch; periodic re-verification continues");
            }
        }
        *self.state.watch.set.write().unwrap_or_else(|p| p.into_inner()) = set;
        if self.source.is_none() {
            self.stat_scan();
        }
    }

    fn verify_all(&mut self, why: &str) {
        for (id, _, _) in self.state.models.roots() {
            let p = self.pending.entry(id).or_insert_with(|| Pending::new(Some(why.to_string())));
            p.touch(None);
            p.trigger.get_or_insert_with(|| why.to_string());
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Refresh => self.refresh(),
            Input::Proc { who, exe } => self.procs.exec(who.pid, who.ppid, who.uid, who.comm, exe),
            Input::Exit(pid) => {
                self.procs.exit(pid);
                for p in self.pending.values_mut() {
                    p.open.retain(|(o, _)| *o != pid);
                }
            }
            Input::Seen(seen) => self.seen(seen),
            Input::Exec { who, path } => self.exec(who, path).await,
            Input::Refused { who, path } => {
                let hint = Proc { ppid: who.ppid, uid: who.uid, comm: who.comm.clone(), ..Default::default() };
                let actor = self.procs.describe(who.pid, &hint);
                let model = self.state.models.roots().into_iter().find(|(_, root, _)| path.starts_with(root)).map(|(_, root, _)| root.display().to_string());
                let body = json!({ "event": "write_refused", "model": model, "path": path, "actor": actor, "enforcement": "BPF LSM file_open" });
                self.append(Kind::Integrity, Severity::Warning, "integrity-watch", body.clone()).await;
                self.append(Kind::Anomaly, Severity::Warning, "integrity-watch", body).await;
            }
            Input::Lost { count, source } => {
                self.state.watch.update(|i| i.lost += count);
                let body = json!({ "event": "events_lost", "source": source, "count": count, "action": "re-verifying every approved model" });
                self.append(Kind::Anomaly, Severity::Warning, "integrity-watch", body).await;
                self.verify_all("events lost");
            }
            Input::Unresolved(what) => {
                tracing::info!(what = %what, "a change near a watched directory could not be resolved; re-verifying");
                self.verify_all("unresolved change");
            }
            Input::VerifyAll(why) => self.verify_all(why),
            Input::Plan(plan, done) => {
                if self.plan.as_ref() != Some(&plan) {
                    self.apply(plan).await;
                }
                let _ = done.send(());
            }
        }
    }

    fn seen(&mut self, seen: Seen) {
        let hits: Vec<(String, Option<Touched>)> = self
            .state
            .models
            .roots()
            .into_iter()
            .filter_map(|(id, path, is_dir)| touched_in(&path, is_dir, &seen.paths, seen.range).map(|t| (id, t)))
            .collect();
        if hits.is_empty() {
            return;
        }
        let hint = Proc { ppid: seen.who.ppid, uid: seen.who.uid, comm: seen.who.comm.clone(), exe: seen.who.exe.clone(), ..Default::default() };
        let actor = self.procs.describe(seen.who.pid, &hint);
        for (id, touched) in hits {
            let p = self.pending.entry(id.clone()).or_insert_with(|| Pending::new(None));
            // An open for writing says nothing yet of what changed: its close does (with
            // the bytes written), or, if it never comes, the file is taken whole.
            if seen.settled {
                p.touch(touched);
            }
            p.last = Instant::now();
            // Only the close ends a write-open: a truncate or chmod by the same writer
            // (an open with O_TRUNC reports both) leaves the file open, and judging it
            // then would read it half written.
            for path in &seen.paths {
                if !seen.settled {
                    p.open.insert((seen.who.pid, path.clone()));
                } else if seen.op == Op::Close {
                    p.open.remove(&(seen.who.pid, path.clone()));
                }
            }
            p.steps.push(Step { op: seen.op, paths: seen.paths.clone(), actor: actor.clone(), who: seen.who.clone(), time_ns: seen.time_ns });
            self.state.models.mark_verifying(&id);
        }
    }

    async fn flush(&mut self) {
        let now = Instant::now();
        let ready: Vec<String> = self.pending.iter().filter(|(_, p)| p.due() <= now).map(|(id, _)| id.clone()).collect();
        for id in ready {
            // With eBPF's process events beside fanotify, a writer that has exited is
            // known from its exec once that event is read: it comes by another path and
            // may trail the file's, so the verdict waits a little for it.
            let waiting = self.mode.contains("ebpf-exec")
                && self.pending.get(&id).is_some_and(|p| {
                    p.first.elapsed() < WAIT_FOR_EXEC && p.steps.iter().any(|s| s.actor["exe"].is_null() && !self.procs.knows(s.who.pid))
                });
            if waiting {
                if let Some(p) = self.pending.get_mut(&id) {
                    p.last = now;
                }
                continue;
            }
            if let Some(p) = self.pending.remove(&id) {
                self.judge(&id, p).await;
            }
        }
    }

    async fn judge(&mut self, id: &str, mut p: Pending) {
        let Some(approval) = self.state.models.by_id(id) else { return };
        // A writer not known when its event came (it had exited, and its exec had not
        // been read yet: fanotify and eBPF's process events arrive by separate paths)
        // is looked up again now.
        for step in p.steps.iter_mut().filter(|s| s.actor["exe"].is_null()) {
            let hint = Proc { ppid: step.who.ppid, uid: step.who.uid, comm: step.who.comm.clone(), exe: step.who.exe.clone(), ..Default::default() };
            step.actor = self.procs.describe(step.who.pid, &hint);
        }
        // Files still open for writing (the writer outlasted our patience) are re-hashed
        // whole.
        let still_open: Vec<PathBuf> = p.open.iter().map(|(_, path)| path.clone()).collect();
        if let Some(t) = touched_in(&approval.path, approval.is_dir(), &still_open, None) {
            p.touch(t);
        }
        let touched = p.touched.clone();
        let a = approval.clone();
        let (v, bytes) = tokio::task::spawn_blocking(move || {
            let done = AtomicU64::new(0);
            let v = check(&a, touched.as_ref(), &done);
            (v, done.into_inner())
        })
        .await
        .unwrap_or_else(|e| (Verification { state: "modified".into(), changed: vec![format!("re-hash failed: {e}")], ..Default::default() }, 0));
        let ok = v.state == "verified";
        let path = approval.path.display().to_string();
        let mut body = json!({
            "model": path,
            "model_id": approval.id,
            "observed_by": self.mode,
            "rehashed": match &p.touched {
                Some(t) => json!(t.keys().collect::<Vec<_>>()),
                None => json!("all"),
            },
            "written_ranges": match &p.touched {
                Some(t) => t.iter().filter_map(|(n, r)| r.map(|(lo, hi)| (n.clone(), json!([lo, hi])))).collect::<serde_json::Map<_, _>>().into(),
                None => Value::Null,
            },
            "bytes_hashed": bytes,
            "state": v.state,
            "changed": v.changed,
            "missing": v.missing,
            "added": v.added,
            "attributes": v.attributes,
            "approved_digest": lucid_common::hex::encode(&approval.manifest.subject_digest()),
            "approval_record": approval.record_seq,
        });
        // Why everything was re-read (startup, periodic, lost events), where it was.
        body["trigger"] = json!(p.trigger);
        if p.steps.is_empty() {
            body["event"] = json!("reverified");
        } else {
            let first = &p.steps[0];
            body["event"] = json!("model_change");
            body["verdict"] = json!(if ok { "approved" } else { "unapproved" });
            body["actor"] = first.actor.clone();
            body["operations"] = p
                .steps
                .iter()
                .map(|s| json!({ "op": s.op.name(), "paths": s.paths, "pid": s.who.pid, "time_ns": s.time_ns }))
                .collect();
            body["observed_ns"] = json!(first.time_ns);
        }
        let severity = if ok { Severity::Info } else { Severity::Warning };
        let seq = self.append(Kind::Integrity, severity, "integrity-watch", body.clone()).await;
        if !ok {
            self.append(Kind::Anomaly, Severity::Warning, "integrity-watch", body).await;
        }
        self.state.watch.update(|i| i.changes += 1);
        if let (Some(step), Some(seq)) = (p.steps.last(), seq) {
            let exe = step.actor["exe"].as_str().map(str::to_string);
            let change = LastChange {
                time_ns: step.time_ns,
                op: step.op.name().into(),
                path: step.paths.first().map(|p| p.display().to_string()).unwrap_or_default(),
                pid: step.who.pid,
                exe,
                uid: step.actor["uid"].as_u64().unwrap_or(u64::from(step.who.uid)) as u32,
                record: seq,
            };
            if let Err(e) = self.state.models.set_last_change(id, change) {
                tracing::warn!(error = %e, model = %path, "could not store the model's last change");
            }
        }
        self.state.models.set_last(id, v);
        // New subdirectories, renamed ones: the watch set follows the model.
        if !p.steps.is_empty() {
            self.refresh();
        }
    }

    /// An approved binary (or a file in a watched model) was executed: record it with
    /// the digest of what ran and whether that matches the approval.
    async fn exec(&mut self, who: Who, path: PathBuf) {
        let actor = self.procs.describe(who.pid, &Proc { ppid: who.ppid, uid: who.uid, comm: who.comm.clone(), exe: Some(path.display().to_string()), ..Default::default() });
        let running = actor["exe_sha256"].as_str().map(str::to_string);
        for (id, root, is_dir) in self.state.models.roots() {
            let Some(touched) = touched_in(&root, is_dir, std::slice::from_ref(&path), None) else { continue };
            let Some(a) = self.state.models.by_id(&id) else { continue };
            // For a single-file approval by files, the running image's digest must be the
            // approved one; otherwise check the file on disk.
            let approved = match (&touched, a.manifest.resources.as_slice()) {
                (None, [r]) if r.name == "." && r.algorithm == "sha256" => running.as_deref() == Some(r.digest.as_str()),
                _ => {
                    let a2 = a.clone();
                    tokio::task::spawn_blocking(move || check(&a2, touched.as_ref(), &AtomicU64::new(0)).state == "verified").await.unwrap_or(false)
                }
            };
            let body = json!({
                "event": "serving_exec",
                "model": a.path.display().to_string(),
                "model_id": a.id,
                "exe": path.display().to_string(),
                "running_sha256": running,
                "verdict": if approved { "approved" } else { "unapproved" },
                "actor": actor,
            });
            let severity = if approved { Severity::Info } else { Severity::Warning };
            self.append(Kind::Integrity, severity, "integrity-watch", body.clone()).await;
            if !approved {
                self.append(Kind::Anomaly, Severity::Warning, "integrity-watch", body).await;
            }
        }
    }

    /// Periodic mode: compares each approved file's stamps with the last look, and
    /// queues those that differ (or appeared, or went) for a re-hash.
    fn stat_scan(&mut self) {
        let mut now = HashMap::new();
        for a in self.state.models.all() {
            let files = super::super::hash::files(&a.path, &a.manifest.ignore_paths).unwrap_or_default();
            let mut touched = Touched::new();
            for (path, name, _) in files {
                if let Ok(m) = std::fs::symlink_metadata(&path) {
                    let stamp = (m.ino(), m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ctime_nsec() + m.ctime() * 1_000_000_000, m.mode(), m.uid(), m.gid());
                    if self.stamps.get(&path).is_some_and(|s| *s != stamp) {
                        touched.insert(name.clone(), None);
                    }
                    now.insert(path, stamp);
                }
            }
            let gone = self.stamps.keys().any(|p| p.starts_with(&a.path) && !now.contains_key(p));
            let added = now.keys().any(|p| p.starts_with(&a.path) && !self.stamps.contains_key(p)) && !self.stamps.is_empty();
            if !touched.is_empty() || gone || added {
                let p = self.pending.entry(a.id.clone()).or_insert_with(|| Pending::new(Some("stat".into())));
                p.touch(if gone || added { None } else { Some(touched) });
                p.trigger.get_or_insert_with(|| "file stamps changed".into());
            }
        }
        self.stamps = now;
    }

    async fn append(&self, kind: Kind, severity: Severity, source: &str, body: Value) -> Option<u64> {
        let subject = body["model"].as_str().unwrap_or("models").to_string();
        let entry = Entry { kind, source: source.into(), controls: vec!["CC8.1".into()], severity, subject, body };
        match self.state.ledger.append(entry).await {
            Ok(r) => Some(r.seq),
            Err(e) => {
                tracing::error!(error = %e, "could not record a model integrity observation");
                None
            }
        }
    }
}
