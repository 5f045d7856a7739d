//! The PredictiveScaler resource, the Kubernetes sink and the watcher
//! against a real kube-apiserver (with etcd), started by
//! `tests/harness/kube.sh` (CI starts it before `cargo test`; otherwise the
//! first test here starts it, which builds it on first use, and leaves it
//! running for the next run: stop it with `tests/harness/kube.sh stop`).
//! When it cannot start, every test here fails with the harness' reason:
//! none of them passes without a cluster. One test also needs the real
//! Kafka broker (`KAFKA_BOOTSTRAP`, or one it starts).
//!
//! Each test works in its own namespace, so they run in parallel on one
//! apiserver, and again on the same one; the outage test, which stops the
//! apiserver, takes the cluster for itself.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use prescale::kube::crd::PredictiveScaler;
use prescale::kube::sink::{KubeSink, SinkOptions, SinkReport};
use prescale::kube::watcher::{SpecWatcher, WatchOptions};
use prescale_dataflows::decide::{Decision, Mode, Reason, SpecUpdate, UsedForecast};
use prescale_dataflows::record::SeriesKey;

/// The running harness: kubeconfigs and the directory of its `kubectl`.
struct Cluster {
    admin: PathBuf,
    service_account: PathBuf,
    bin: PathBuf,
}

/// Held shared by every test, and exclusively by the one that stops the
/// apiserver.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// The cluster, shared with the other tests (see [`start_cluster`]).
fn cluster() -> (&'static Cluster, RwLockReadGuard<'static, ()>) {
    let guard = EXCLUSIVE.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    (start_cluster(), guard)
}

/// The cluster, for this test alone.
fn cluster_alone() -> (&'static Cluster, RwLockWriteGuard<'static, ()>) {
    let guard = EXCLUSIVE.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    (start_cluster(), guard)
}

fn harness(command: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/kube.sh");
    Command::new("bash").arg(script).arg(command).output().unwrap()
}

/// Starts the harness (or finds it running) and installs the CRD, once per
/// test process. Panics with the harness' own message when it cannot.
fn start_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // `start` is idempotent: with the harness already up (as in CI) it
        // only prints the same environment again.
        let out = harness("start");
        assert!(
            out.status.success(),
            "the kube-apiserver harness did not start ({}); these tests need it:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("kube.sh start printed no {name}:\n{stdout}"))
                .to_owned()
        };
        let path = var("PATH");
        let cluster = Cluster {
            admin: PathBuf::from(var("KUBECONFIG")),
            service_account: PathBuf::from(var("PRESCALE_SA_KUBECONFIG")),
            bin: PathBuf::from(path.split(':').next().unwrap()),
        };
        let crd = root.join("deploy/crd.yaml");
        kubectl_ok(&cluster, &["apply", "--server-side", "--force-conflicts", "-f", crd.to_str().unwrap()]);
        kubectl_ok(
            &cluster,
            &["wait", "--for", "condition=established", "--timeout=60s", "crd/predictivescalers.prescale.dev"],
        );
        cluster
    })
}

fn kubectl_as(c: &Cluster, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(c.bin.join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn kubectl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_as(c, &c.admin, args, stdin)
}

fn kubectl_ok(c: &Cluster, args: &[&str]) -> String {
    let out = kubectl(c, args, None);
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(c: &Cluster, yaml: &str) -> Output {
    kubectl(c, &["apply", "-f", "-"], Some(yaml))
}

/// A fresh namespace for one test, unique across runs on one apiserver.
fn namespace(c: &Cluster, name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ns = format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    kubectl_ok(c, &["create", "namespace", &ns]);
    ns
}

fn deployment(c: &Cluster, ns: &str, name: &str, replicas: u32) {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: registry.invalid/app:1}}]}}\n"
    );
    let out = apply(c, &yaml);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn scaler_yaml(ns: &str, name: &str, target: &str, extra: &str) -> String {
    format!(
        "apiVersion: prescale.dev/v1alpha1\nkind: PredictiveScaler\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {target}}}\n  metricName: rps\n  \
         forecastHorizonMinutes: 30\n  minReplicas: 1\n  maxReplicas: 20\n  targetPerReplica: 50\n{extra}"
    )
}

fn scaler(c: &Cluster, ns: &str, name: &str, target: &str, extra: &str) {
    let out = apply(c, &scaler_yaml(ns, name, target, extra));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn decision(ns: &str, scaler: &str, target: &str, desired: u32, reason: Reason) -> Decision {
    Decision {
        time_ms: 1_767_571_200_000,
        scaler: scaler.into(),
        series: SeriesKey { namespace: ns.into(), deployment: target.into(), metric: "rps".into() },
        mode: Mode::Auto,
        current: 2,
        desired,
        reason,
        detail: None,
        load: Some(90.0),
        reactive: Some(2),
        forecast: Some(UsedForecast {
            origin_ms: 1_767_571_200_000,
            until_ms: 1_767_573_000_000,
            point: 200.0,
            upper: 240.0,
            level: 0.9,
            step_seen: false,
        }),
        model: Some("mstl".into()),
        recent_error: Some(0.7),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn client(kubeconfig: &Path) -> (tokio::runtime::Runtime, Client) {
    let rt = runtime();
    let client = rt.block_on(prescale::kube::connect(Some(kubeconfig))).unwrap();
    (rt, client)
}

/// Runs a sink over `decisions` to the end.
fn sink(kubeconfig: &Path, dry_run: bool, decisions: Vec<Decision>) -> SinkReport {
    let options = SinkOptions {
        kubeconfig: Some(kubeconfig.to_owned()),
        dry_run,
        min_interval: Duration::ZERO,
        backoff_base: Duration::from_millis(50),
        ..SinkOptions::default()
    };
    let sink = KubeSink::start(options).unwrap();
    let tx = sink.sender();
    for d in decisions {
        assert!(tx.send(d));
    }
    drop(tx);
    sink.finish().unwrap()
}

fn replicas(c: &Cluster, ns: &str, name: &str) -> String {
    kubectl_ok(c, &["-n", ns, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}"])
}

fn get_scaler(c: &Cluster, ns: &str, name: &str) -> PredictiveScaler {
    let (rt, client) = client(&c.admin);
    rt.block_on(Api::<PredictiveScaler>::namespaced(client, ns).get(name)).unwrap()
}

fn condition(ps: &PredictiveScaler, type_: &str) -> (String, String) {
    let status = ps.status.as_ref().expect("a status");
    let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_}: {status:?}"));
    (c.status.clone(), c.reason.clone())
}

fn events(c: &Cluster, ns: &str) -> Vec<Event> {
    let (rt, client) = client(&c.admin);
    rt.block_on(Api::<Event>::namespaced(client, ns).list(&ListParams::default())).unwrap().items
}

#[test]
fn the_apiserver_accepts_a_valid_scaler_and_refuses_bad_ones_with_clear_messages() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "crd");
    let out = apply(c, &scaler_yaml(&ns, "good", "web", ""));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for (name, extra, expected) in [
        ("min-above-max", "", "minReplicas must not exceed maxReplicas"),
        ("short-horizon", "", "should be greater than or equal to 5"),
        ("zero-min", "", "spec.minReplicas"),
        ("two-targets", "  targetUtilization: 70\n", "set exactly one of targetPerReplica and targetUtilization"),
        ("bad-kind", "", "spec.targetRef.kind"),
    ] {
        let mut yaml = scaler_yaml(&ns, name, "web", extra);
        match name {
            "min-above-max" => yaml = yaml.replace("minReplicas: 1", "minReplicas: 30"),
            "short-horizon" => yaml = yaml.replace("forecastHorizonMinutes: 30", "forecastHorizonMinutes: 3"),
            "zero-min" => yaml = yaml.replace("minReplicas: 1", "minReplicas: 0"),
            "bad-kind" => yaml = yaml.replace("kind: Deployment", "kind: DaemonSet"),
            _ => {}
        }
        let out = apply(c, &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(expected), "{name}: expected {expected:?} in:\n{stderr}");
    }
    let listed = kubectl_ok(c, &["-n", &ns, "get", "ps"]);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TARGET", "MODE", "CURRENT", "DESIRED", "MODEL", "REASON", "AGE"], "{listed}");
    assert!(listed.contains("good") && !listed.contains("zero-min"), "{listed}");
}

#[test]
fn the_sink_scales_the_target_and_writes_status_and_an_event() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "sink");
    deployment(c, &ns, "web", 2);
    scaler(c, &ns, "web", "web", "");
    // The newest decision per scaler wins; an unmanaged series is skipped.
    let report = sink(
        &c.admin,
        false,
        vec![
            decision(&ns, "web", "web", 4, Reason::Forecast),
            decision(&ns, "web", "web", 5, Reason::Forecast),
            decision(&ns, "nobody", "api", 9, Reason::Forecast),
        ],
    );
    assert_eq!(replicas(c, &ns, "web"), "5");
    assert_eq!((report.received, report.unmanaged, report.dropped), (3, 1, 0), "{report:?}");
    assert!(report.scaled >= 1, "{report:?}");

    let ps = get_scaler(c, &ns, "web");
    let status = ps.status.clone().unwrap();
    assert_eq!((status.current_replicas, status.desired_replicas), (Some(5), Some(5)));
    assert_eq!(status.observed_generation, ps.metadata.generation);
    assert_eq!(status.reason.as_deref(), Some("forecast"));
    assert_eq!(status.model.as_deref(), Some("mstl"));
    assert_eq!(status.last_forecast.as_ref().map(|f| f.upper), Some(240.0));
    assert!(status.last_scale_time.is_some());
    assert_eq!(condition(&ps, "Ready"), ("True".into(), "Scaled".into()));
    assert_eq!(condition(&ps, "PredictionReady").0, "True");
    assert_eq!(condition(&ps, "Fallback").0, "False");
    assert_eq!(condition(&ps, "ScalingLimited").0, "False");
    let scaled: Vec<Event> = events(c, &ns).into_iter().filter(|e| e.reason.as_deref() == Some("Scaled")).collect();
    assert!(!scaled.is_empty(), "no Scaled event");
    assert!(scaled.iter().all(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")));
    // The decision for 4 may or may not have been written before the one
    // for 5 replaced it. If it was, the recorder folds the second `Scaled`
    // event into the first one's series (as client-go's events recorder
    // does: the note is not part of an event's identity), which keeps the
    // first note; so the note says 4 or 5, and the status above says 5.
    let notes: Vec<&str> = scaled.iter().filter_map(|e| e.note.as_deref()).collect();
    assert!(!notes.is_empty(), "a Scaled event without a note");
    assert!(
        notes.iter().all(|n| n.starts_with("Deployment web: 2 -> ") && (n.contains("-> 4 ") || n.contains("-> 5 "))),
        "{notes:?}"
    );

    // The same count again is not a write to the target.
    let report = sink(&c.admin, false, vec![decision(&ns, "web", "web", 5, Reason::Max)]);
    assert_eq!((report.scaled, report.written), (0, 1), "{report:?}");
    let ps = get_scaler(c, &ns, "web");
    assert_eq!(condition(&ps, "Ready"), ("True".into(), "Applied".into()));
    assert_eq!(condition(&ps, "ScalingLimited"), ("True".into(), "TooManyReplicas".into()));
    kubectl_ok(c, &["-n", &ns, "get", "ps", "web"]);
}

#[test]
fn forecast_only_and_dry_run_report_but_never_scale() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "noscale");
    deployment(c, &ns, "web", 2);
    deployment(c, &ns, "api", 2);
    scaler(c, &ns, "web", "web", "  mode: ForecastOnly\n");
    scaler(c, &ns, "api", "api", "");
    let report = sink(&c.admin, false, vec![decision(&ns, "web", "web", 7, Reason::Forecast)]);
    assert_eq!(report.scaled, 0, "{report:?}");
    let report = sink(&c.admin, true, vec![decision(&ns, "api", "api", 7, Reason::Forecast)]);
    assert_eq!(report.scaled, 0, "{report:?}");
    for (name, why) in [("web", "ForecastOnly"), ("api", "DryRun")] {
        assert_eq!(replicas(c, &ns, name), "2", "{name}");
        let ps = get_scaler(c, &ns, name);
        let status = ps.status.clone().unwrap();
        assert_eq!((status.current_replicas, status.desired_replicas), (Some(2), Some(7)), "{name}");
        assert_eq!(condition(&ps, "Ready"), ("True".into(), why.into()));
        assert_eq!(status.last_scale_time, None);
    }
}

#[test]
fn a_missing_target_and_a_fallback_become_conditions_and_warnings() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "missing");
    scaler(c, &ns, "ghost", "ghost", "");
    let mut fallback = decision(&ns, "ghost", "ghost", 3, Reason::Fallback("stale".parse_fallback()));
    fallback.detail = Some("no data for 20m".into());
    fallback.forecast = None;
    let report = sink(&c.admin, false, vec![fallback]);
    assert_eq!((report.missing_targets, report.dropped), (1, 0), "{report:?}");
    let ps = get_scaler(c, &ns, "ghost");
    assert_eq!(condition(&ps, "Ready"), ("False".into(), "TargetNotFound".into()));
    assert_eq!(condition(&ps, "Fallback"), ("True".into(), "Stale".into()));
    assert_eq!(condition(&ps, "PredictionReady").0, "False");
    let reasons: Vec<String> = events(c, &ns).into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "TargetNotFound"), "{reasons:?}");
}

/// `"stale".parse_fallback()`: the decide stage's fallback reason by name.
trait ParseFallback {
    fn parse_fallback(&self) -> prescale_dataflows::decide::FallbackReason;
}

impl ParseFallback for str {
    fn parse_fallback(&self) -> prescale_dataflows::decide::FallbackReason {
        match format!("fallback:{self}").parse::<Reason>().unwrap() {
            Reason::Fallback(why) => why,
            other => panic!("{other}"),
        }
    }
}

#[test]
fn the_service_account_can_do_the_sinks_work_and_nothing_else() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "rbac");
    deployment(c, &ns, "web", 2);
    scaler(c, &ns, "web", "web", "");
    let report = sink(&c.service_account, false, vec![decision(&ns, "web", "web", 6, Reason::Forecast)]);
    assert_eq!((report.scaled, report.written, report.dropped), (1, 1, 0), "{report:?}");
    assert_eq!(replicas(c, &ns, "web"), "6");
    assert!(events(c, &ns).iter().any(|e| e.reason.as_deref() == Some("Scaled")));

    // The watcher's list and watch work as the service account too.
    let (tx, _rx) = std::sync::mpsc::channel();
    let options = WatchOptions { kubeconfig: Some(c.service_account.clone()), ..WatchOptions::default() };
    SpecWatcher::start(options, tx).unwrap().stop();

    for args in [
        vec!["-n", ns.as_str(), "delete", "deployment", "web"],
        vec!["-n", ns.as_str(), "get", "secrets"],
        vec!["-n", ns.as_str(), "get", "deployment", "web"],
        vec!["-n", ns.as_str(), "delete", "ps", "web"],
        vec!["-n", ns.as_str(), "patch", "ps", "web", "--type=merge", "-p", r#"{"spec":{"maxReplicas":99}}"#],
    ] {
        let out = kubectl_as(c, &c.service_account, &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("Forbidden"), "{args:?} was not refused: {stderr}");
    }
}

fn next_update(rx: &std::sync::mpsc::Receiver<SpecUpdate>) -> SpecUpdate {
    rx.recv_timeout(Duration::from_secs(20)).expect("a spec update within 20 s")
}

fn no_update(rx: &std::sync::mpsc::Receiver<SpecUpdate>) {
    if let Ok(u) = rx.recv_timeout(Duration::from_secs(2)) {
        panic!("unexpected update: {u:?}");
    }
}

#[test]
fn the_watcher_turns_creates_edits_and_deletes_into_spec_updates() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "watch");
    scaler(c, &ns, "before", "early", "");
    let (tx, rx) = std::sync::mpsc::channel();
    let options =
        WatchOptions { kubeconfig: Some(c.admin.clone()), namespace: Some(ns.clone()), ..WatchOptions::default() };
    let watcher = SpecWatcher::start(options, tx).unwrap();
    // Present before the start: delivered by the time `start` returns.
    let u = rx.try_recv().expect("the initial list is sent before start returns");
    assert_eq!((u.scaler.as_str(), u.series.deployment.as_str()), ("before", "early"));

    scaler(c, &ns, "web", "web", "");
    let u = next_update(&rx);
    assert_eq!((u.scaler.as_str(), u.series.namespace.as_str(), u.series.metric.as_str()), ("web", ns.as_str(), "rps"));
    assert_eq!(u.spec.as_ref().map(|s| s.max_replicas), Some(20));

    // An edit: the new spec.
    kubectl_ok(c, &["-n", &ns, "patch", "ps", "web", "--type=merge", "-p", r#"{"spec":{"maxReplicas":8}}"#]);
    assert_eq!(next_update(&rx).spec.map(|s| s.max_replicas), Some(8));

    // A status write is not a spec change.
    sink(&c.admin, true, vec![decision(&ns, "web", "web", 3, Reason::Forecast)]);
    no_update(&rx);

    // Retargeting retracts the old series and adds the new.
    kubectl_ok(c, &["-n", &ns, "patch", "ps", "web", "--type=merge", "-p", r#"{"spec":{"targetRef":{"name":"api"}}}"#]);
    let (old, new) = (next_update(&rx), next_update(&rx));
    assert_eq!((old.series.deployment.as_str(), old.spec.is_none()), ("web", true));
    assert_eq!((new.series.deployment.as_str(), new.spec.is_some()), ("api", true));

    // A spec the job cannot honour is retracted, and says why.
    let long_metric = format!(r#"{{"spec":{{"metricName":"{}"}}}}"#, "m".repeat(600));
    kubectl_ok(c, &["-n", &ns, "patch", "ps", "web", "--type=merge", "-p", &long_metric]);
    let u = next_update(&rx);
    assert_eq!((u.series.deployment.as_str(), u.spec.is_none()), ("api", true));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ps = get_scaler(c, &ns, "web");
        if ps.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "InvalidSpec")) {
            let (status, _) = condition(&ps, "Ready");
            assert_eq!(status, "False");
            break;
        }
        assert!(Instant::now() < deadline, "no InvalidSpec condition: {:?}", ps.status);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Deleting one retracts it.
    kubectl_ok(c, &["-n", &ns, "delete", "ps", "before"]);
    let u = next_update(&rx);
    assert_eq!((u.scaler.as_str(), u.spec.is_none()), ("before", true));
    watcher.stop();
}

#[test]
fn a_statefulset_is_scaled_through_its_scale_subresource() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "sts");
    let yaml = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: {ns}}}\n\
         spec:\n  replicas: 1\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    \
         metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: db, image: registry.invalid/db:1}}]}}\n"
    );
    assert!(apply(c, &yaml).status.success());
    let ps = scaler_yaml(&ns, "db", "db", "").replace("kind: Deployment", "kind: StatefulSet");
    assert!(apply(c, &ps).status.success());
    let report = sink(&c.admin, false, vec![decision(&ns, "db", "db", 3, Reason::Forecast)]);
    assert_eq!(report.scaled, 1, "{report:?}");
    let got = kubectl_ok(c, &["-n", &ns, "get", "statefulset", "db", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(got, "3");
    assert_eq!(get_scaler(c, &ns, "db").status.and_then(|s| s.current_replicas), Some(3));
}

#[test]
fn an_apiserver_outage_is_retried_with_backoff_and_then_applied() {
    let (c, _alone) = cluster_alone();
    let ns = namespace(c, "outage");
    deployment(c, &ns, "web", 2);
    scaler(c, &ns, "web", "web", "");
    let options = SinkOptions {
        kubeconfig: Some(c.admin.clone()),
        min_interval: Duration::ZERO,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        max_attempts: 60,
        ..SinkOptions::default()
    };
    let sink = KubeSink::start(options).unwrap();
    let stopped = harness("stop-apiserver");
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let tx = sink.sender();
    assert!(tx.send(decision(&ns, "web", "web", 3, Reason::Forecast)));
    // Let the sink fail against the stopped apiserver for a while; a newer
    // decision arriving meanwhile replaces the failing one.
    std::thread::sleep(Duration::from_secs(2));
    assert!(tx.send(decision(&ns, "web", "web", 4, Reason::Forecast)));
    drop(tx);
    let started = harness("start-apiserver");
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let report = sink.finish().unwrap();
    assert!(report.retries >= 2, "{report:?}");
    assert_eq!((report.scaled, report.dropped), (1, 0), "{report:?}");
    assert_eq!(replicas(c, &ns, "web"), "4");
}

/// Polls `check` every 100 ms until it holds; fails after `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Spec updates until none comes for 2 s, as (scaler, maxReplicas or None
/// for a retraction), sorted.
fn updates_until_quiet(rx: &std::sync::mpsc::Receiver<SpecUpdate>) -> Vec<(String, Option<u32>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    // The first waits out the watch's reconnect backoff.
    let mut wait = Duration::from_secs(30);
    while let Ok(u) = rx.recv_timeout(wait) {
        got.push((u.scaler.clone(), u.spec.map(|s| s.max_replicas)));
        wait = Duration::from_secs(2);
        assert!(Instant::now() < deadline, "updates keep coming: {got:?}");
    }
    got.sort();
    got
}

#[test]
fn after_an_apiserver_restart_the_watcher_resyncs_and_the_sink_writes_from_a_fresh_view() {
    let (c, _alone) = cluster_alone();
    let ns = namespace(c, "resync");
    deployment(c, &ns, "web", 2);
    scaler(c, &ns, "web", "web", "");
    scaler(c, &ns, "gone", "other", "");
    let (tx, rx) = std::sync::mpsc::channel();
    let options =
        WatchOptions { kubeconfig: Some(c.admin.clone()), namespace: Some(ns.clone()), ..WatchOptions::default() };
    let watcher = SpecWatcher::start(options, tx).unwrap();
    let initial: Vec<String> = rx.try_iter().map(|u| u.scaler).collect();
    assert_eq!(initial.len(), 2, "{initial:?}");

    // A write, then a decision that must wait out the rate limit: it is
    // written only after the outage, over whatever happened meanwhile.
    let min_interval = Duration::from_secs(25);
    let options = SinkOptions {
        kubeconfig: Some(c.admin.clone()),
        min_interval,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        max_attempts: 60,
        ..SinkOptions::default()
    };
    let sink = KubeSink::start(options).unwrap();
    let decisions = sink.sender();
    assert!(decisions.send(decision(&ns, "web", "web", 3, Reason::Forecast)));
    eventually(Duration::from_secs(20), "the first decision applied", || replicas(c, &ns, "web") == "3");
    let written = Instant::now();
    let stopped = harness("stop-apiserver");
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    // Made under maxReplicas 20, while the apiserver is down.
    assert!(decisions.send(decision(&ns, "web", "web", 12, Reason::Forecast)));
    drop(decisions);
    // Down long enough for the watch to fail and back off.
    std::thread::sleep(Duration::from_secs(3));
    let started = harness("start-apiserver");
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    // Right after the restart: a bound lowered, a manual scale, a scaler
    // deleted and one created.
    kubectl_ok(c, &["-n", &ns, "patch", "ps", "web", "--type=merge", "-p", r#"{"spec":{"maxReplicas":6}}"#]);
    kubectl_ok(c, &["-n", &ns, "scale", "deployment", "web", "--replicas", "7"]);
    kubectl_ok(c, &["-n", &ns, "delete", "ps", "gone"]);
    scaler(c, &ns, "new", "api", "");
    assert!(
        written.elapsed() < min_interval,
        "the restart took {:?}: the pending decision may have been written before the edits, so this test cannot \
         tell a stale write from a fresh one",
        written.elapsed()
    );

    // The watcher reconnects and sees every change once; unchanged scalers
    // are not sent again.
    let updates = updates_until_quiet(&rx);
    let want = vec![("gone".to_owned(), None), ("new".to_owned(), Some(20)), ("web".to_owned(), Some(6))];
    assert_eq!(updates, want);
    watcher.stop();

    // The pending decision is written from what the cluster says now: held
    // to the new maxReplicas, scaling from the manual count.
    let report = sink.finish().unwrap();
    assert_eq!((report.scaled, report.dropped), (2, 0), "{report:?}");
    assert_eq!(replicas(c, &ns, "web"), "6", "a stale decision went past the maxReplicas set since");
    let status = get_scaler(c, &ns, "web").status.unwrap();
    assert_eq!((status.desired_replicas, status.reason.as_deref()), (Some(6), Some("max")), "{status:?}");
    // (Not the Event: the recorder folds a second `Scaled` event of one
    // resource into the first one's series, which keeps the first note.)
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("from 7 to 6"), "not scaled from the manual count: {ready:?}");
}

#[test]
fn prescale_run_with_the_kubernetes_sink_scales_a_predictive_scalers_target() {
    // The generator's first series is shop/checkout, metric cpu_usage.
    let (c, _cluster) = cluster();
    let exists = kubectl(c, &["get", "namespace", "shop"], None).status.success();
    if !exists {
        kubectl_ok(c, &["create", "namespace", "shop"]);
    }
    deployment(c, "shop", "checkout", 2);
    let ps = scaler_yaml("shop", "checkout", "checkout", "")
        .replace("metricName: rps", "metricName: cpu_usage")
        .replace("maxReplicas: 20", "maxReplicas: 7")
        .replace("targetPerReplica: 50", "targetPerReplica: 0.001");
    assert!(apply(c, &ps).status.success());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(&config, "[decide]\ndefault_scaler = false\n[kubernetes]\nmin_interval = \"0s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["run", "--config", config.to_str().unwrap(), "--sink", "kubernetes", "--namespace", "shop"])
        .args(["--kubeconfig", c.admin.to_str().unwrap()])
        .args(["--deployments", "1", "--pods", "2", "--duration", "1d"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "prescale run failed: {stderr}");
    assert!(stderr.contains("kubernetes sink:") && stderr.contains(" 0 dropped"), "{stderr}");

    // A load far above what 7 replicas carry: the count goes to maxReplicas.
    assert_eq!(replicas(c, "shop", "checkout"), "7", "{stderr}");
    let ps = get_scaler(c, "shop", "checkout");
    let status = ps.status.clone().unwrap();
    assert_eq!((status.current_replicas, status.desired_replicas), (Some(7), Some(7)), "{status:?}");
    assert!(status.model.is_some() && status.last_forecast.is_some(), "{status:?}");
    assert_eq!(condition(&ps, "Ready").0, "True");
}

#[test]
fn prescale_run_fails_clearly_without_a_usable_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["run", "--sink", "kubernetes", "--kubeconfig", missing.to_str().unwrap(), "--duration", "1h"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such.kubeconfig"), "{stderr}");
}

#[test]
fn the_example_scaler_and_the_rbac_manifest_are_valid_for_the_apiserver() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "example");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("deploy/example-scaler.yaml");
    let rbac = root.join("deploy/rbac.yaml");
    kubectl_ok(c, &["-n", &ns, "apply", "--dry-run=server", "-f", example.to_str().unwrap()]);
    kubectl_ok(c, &["apply", "--dry-run=server", "-f", rbac.to_str().unwrap()]);
    // And the example reads as the job's spec.
    let text = std::fs::read_to_string(&example).unwrap();
    let ps: PredictiveScaler = serde_saphyr::from_str(&text).unwrap();
    let spec = prescale::kube::convert::scaler_spec(&ps.spec).unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas, spec.mode), (2, 40, Mode::ForecastOnly));
}

#[test]
fn the_engine_manifests_are_valid_and_their_job_config_validates() {
    let (c, _cluster) = cluster();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = root.join("deploy/engine.yaml");
    // The harness applied deploy/rbac.yaml: its namespace and account exist.
    kubectl_ok(c, &["apply", "--dry-run=server", "-f", engine.to_str().unwrap()]);
    // The ConfigMap's job config is one the job accepts, for every process.
    let text = std::fs::read_to_string(&engine).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let statefulset = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let hosts = config_map["data"]["hosts.txt"].as_str().unwrap();
    let replicas = statefulset["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(hosts.lines().count() as u64, replicas, "one host line per pod");
    let dir = tempfile::tempdir().unwrap();
    let hosts_path = dir.path().join("hosts.txt");
    std::fs::write(&hosts_path, hosts).unwrap();
    let toml = config_map["data"]["job.toml"]
        .as_str()
        .unwrap()
        .replace("/etc/prescale/hosts.txt", hosts_path.to_str().unwrap());
    for process in 0..replicas as usize {
        let mut job = prescale::config::JobConfig::from_toml(&toml).unwrap();
        job.cluster.process = Some(process);
        let settings = prescale::config::Settings::from_config(&job).unwrap();
        assert_eq!((settings.cluster.addresses.len(), settings.cluster.process), (replicas as usize, process));
        assert!(settings.decide.default.is_none(), "only PredictiveScalers decide in a cluster");
    }
}

#[test]
fn a_scaler_created_during_a_run_changes_the_runs_decisions() {
    let (c, _cluster) = cluster();
    let ns = namespace(c, "live");
    deployment(c, &ns, "live", 2);
    // One day of a steady load, replayed in about 6 s.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    let mut csv = String::from("timestamp,series,value\n");
    for minute in 0..24 * 60 {
        csv.push_str(&format!("{},live,{}\n", 1_767_571_200 + minute * 60, 100 + minute % 7));
    }
    std::fs::write(&trace, csv).unwrap();
    let config = dir.path().join("job.toml");
    let job = format!(
        "[decode]\nnamespace = \"{ns}\"\n[decide]\ndefault_scaler = false\n[kubernetes]\nmin_interval = \"0s\"\n"
    );
    std::fs::write(&config, job).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["run", "--config", config.to_str().unwrap(), "--sink", "kubernetes", "--namespace", &ns])
        .args(["--kubeconfig", c.admin.to_str().unwrap()])
        .args(["--source", &format!("replay:{}", trace.display()), "--speedup", "14400"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // No scaler when the run starts: nothing decides for this deployment.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replicas(c, &ns, "live"), "2");
    let ps = scaler_yaml(&ns, "live", "live", "")
        .replace("metricName: rps", "metricName: value")
        .replace("maxReplicas: 20", "maxReplicas: 6")
        .replace("targetPerReplica: 50", "targetPerReplica: 1");
    assert!(apply(c, &ps).status.success());
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(replicas(c, &ns, "live"), "6", "{stderr}");
    let status = get_scaler(c, &ns, "live").status.unwrap();
    assert_eq!(status.desired_replicas, Some(6), "{status:?}");
}

#[test]
fn a_kafka_stream_scales_a_deployment_end_to_end() {
    let (c, _cluster) = cluster();
    let broker = common::broker::Broker::get();
    let ns = namespace(c, "stream");
    deployment(c, &ns, "stream", 2);
    let ps = scaler_yaml(&ns, "stream", "stream", "")
        .replace("metricName: rps", "metricName: value")
        .replace("maxReplicas: 20", "maxReplicas: 6")
        .replace("targetPerReplica: 50", "targetPerReplica: 1");
    assert!(apply(c, &ps).status.success());
    // Half a day of a steady load, a sample a minute, into a real topic.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    let mut csv = String::from("timestamp,series,value\n");
    for minute in 0..12 * 60 {
        csv.push_str(&format!("{},stream,{}\n", 1_767_571_200 + minute * 60, 100 + minute % 7));
    }
    std::fs::write(&trace, csv).unwrap();
    let config = dir.path().join("job.toml");
    let job = format!(
        "[decode]\nnamespace = \"{ns}\"\n[decide]\ndefault_scaler = false\n[kubernetes]\nmin_interval = \"0s\"\n"
    );
    std::fs::write(&config, job).unwrap();
    let topic = broker.topic("stream", 2);
    let produced = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["produce", "--brokers", &broker.bootstrap, "--topic", &topic, "--format", "bincode"])
        .args(["--config", config.to_str().unwrap(), "--trace", trace.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));
    let run = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["run", "--config", config.to_str().unwrap(), "--source", &broker.uri(&topic)])
        .args(["--format", "bincode", "--from", "beginning", "--exit-when-idle", "3s", "--idle-timeout", "60s"])
        .args(["--sink", "kubernetes", "--namespace", &ns, "--kubeconfig", c.admin.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // ~103 load at 1 per replica, capped by maxReplicas.
    assert_eq!(replicas(c, &ns, "stream"), "6", "{stderr}");
    let status = get_scaler(c, &ns, "stream").status.unwrap();
    assert_eq!(status.desired_replicas, Some(6), "{status:?}");
}
