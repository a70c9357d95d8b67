use super::*;

fn p(args: &[&str]) -> Result<(Global, Cmd), String> {
    parse(args.iter().map(|s| s.to_string()).collect(), None)
}

fn cmd(args: &[&str]) -> Cmd {
    p(args).unwrap().1
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn global_options() {
    let (g, c) = p(&["version"]).unwrap();
    assert_eq!(g.endpoint, client::DEFAULT_ENDPOINT);
    assert_eq!(g.timeout, Duration::from_secs(120));
    assert_eq!(c, Cmd::Version);
    let (g, _) = p(&["--endpoint", "unix:///tmp/c.sock", "--timeout=7", "pods"]).unwrap();
    assert_eq!(
        (g.endpoint.as_str(), g.timeout),
        ("unix:///tmp/c.sock", Duration::from_secs(7))
    );
    let (g, _) = p(&["-r", "/x.sock", "-t", "3", "pods"]).unwrap();
    assert_eq!((g.endpoint.as_str(), g.timeout.as_secs()), ("/x.sock", 3));
    let (g, _) = parse(v(&["pods"]), Some("unix:///env.sock".into())).unwrap();
    assert_eq!(g.endpoint, "unix:///env.sock");
    assert!(p(&["--timeout", "x", "pods"]).is_err());
    assert!(p(&["--bogus", "pods"]).is_err());
    assert!(p(&[]).is_err());
    assert_eq!(p(&["--help"]).unwrap_err(), "");
}

#[test]
fn pod_and_container_lifecycle() {
    assert_eq!(
        cmd(&["runp", "pod.json"]),
        Cmd::Runp {
            runtime: String::new(),
            pod: "pod.json".into()
        }
    );
    assert_eq!(
        cmd(&["runp", "--runtime", "vxn", "pod.json"]),
        Cmd::Runp {
            runtime: "vxn".into(),
            pod: "pod.json".into()
        }
    );
    assert_eq!(
        cmd(&["runp", "--runtime=vxn", "p"]),
        Cmd::Runp {
            runtime: "vxn".into(),
            pod: "p".into()
        }
    );
    assert!(p(&["runp"]).is_err());
    assert!(p(&["runp", "a", "b"]).is_err());
    assert_eq!(
        cmd(&["create", "P", "c.json", "p.json"]),
        Cmd::Create {
            pod_id: "P".into(),
            container: "c.json".into(),
            pod: "p.json".into()
        }
    );
    assert!(p(&["create", "P", "c.json"]).is_err());
    assert_eq!(cmd(&["start", "a", "b"]), Cmd::Start(v(&["a", "b"])));
    assert_eq!(
        cmd(&["stop", "a"]),
        Cmd::Stop {
            timeout: 0,
            ids: v(&["a"])
        }
    );
    assert_eq!(
        cmd(&["stop", "--timeout", "5", "a"]),
        Cmd::Stop {
            timeout: 5,
            ids: v(&["a"])
        }
    );
    assert_eq!(cmd(&["rm", "a"]), Cmd::Rm(v(&["a"])));
    assert_eq!(cmd(&["stopp", "a"]), Cmd::Stopp(v(&["a"])));
    assert_eq!(cmd(&["rmp", "a", "b"]), Cmd::Rmp(v(&["a", "b"])));
    assert!(p(&["start"]).is_err());
    assert!(p(&["rm", "-f", "a"]).is_err());
}

#[test]
fn listings() {
    assert_eq!(cmd(&["pods"]), Cmd::Pods { quiet: false });
    assert_eq!(cmd(&["pods", "-q"]), Cmd::Pods { quiet: true });
    assert_eq!(
        cmd(&["ps"]),
        Cmd::Ps {
            all: false,
            quiet: false,
            pod: None
        }
    );
    assert_eq!(
        cmd(&["ps", "-a", "-q", "--pod", "P"]),
        Cmd::Ps {
            all: true,
            quiet: true,
            pod: Some("P".into())
        }
    );
    assert_eq!(
        cmd(&["ps", "--pod=P"]),
        Cmd::Ps {
            all: false,
            quiet: false,
            pod: Some("P".into())
        }
    );
    assert!(p(&["pods", "-a"]).is_err());
    assert!(p(&["ps", "-q=1"]).is_err());
    assert!(p(&["ps", "extra"]).is_err());
    assert_eq!(cmd(&["images", "-q"]), Cmd::Images { quiet: true });
    assert_eq!(cmd(&["stats"]), Cmd::Stats(None));
    assert_eq!(cmd(&["stats", "C"]), Cmd::Stats(Some("C".into())));
    assert_eq!(cmd(&["statsp", "P"]), Cmd::Statsp(Some("P".into())));
    assert!(p(&["stats", "a", "b"]).is_err());
    assert_eq!(cmd(&["inspect", "C"]), Cmd::Inspect("C".into()));
    assert_eq!(cmd(&["inspectp", "P"]), Cmd::Inspectp("P".into()));
    assert!(p(&["inspect"]).is_err());
    assert!(p(&["version", "x"]).is_err());
    assert!(p(&["frobnicate"]).is_err());
}

#[test]
fn exec_sync_keeps_the_command_options() {
    assert_eq!(
        cmd(&["exec-sync", "C", "sh", "-c", "echo --timeout"]),
        Cmd::ExecSync {
            timeout: 0,
            id: "C".into(),
            cmd: v(&["sh", "-c", "echo --timeout"])
        }
    );
    assert_eq!(
        cmd(&["exec-sync", "--timeout", "9", "C", "ls", "-l"]),
        Cmd::ExecSync {
            timeout: 9,
            id: "C".into(),
            cmd: v(&["ls", "-l"])
        }
    );
    assert_eq!(
        cmd(&["exec-sync", "--", "C", "true"]),
        Cmd::ExecSync {
            timeout: 0,
            id: "C".into(),
            cmd: v(&["true"])
        }
    );
    assert!(p(&["exec-sync", "C"]).is_err());
    assert!(p(&["exec-sync"]).is_err());
}

#[test]
fn logs_stream_filter() {
    assert_eq!(
        cmd(&["logs", "C"]),
        Cmd::Logs {
            stream: None,
            id: "C".into()
        }
    );
    assert_eq!(
        cmd(&["logs", "--stream", "stderr", "C"]),
        Cmd::Logs {
            stream: Some(Stream::Stderr),
            id: "C".into()
        }
    );
    assert_eq!(
        cmd(&["logs", "--stream=stdout", "C"]),
        Cmd::Logs {
            stream: Some(Stream::Stdout),
            id: "C".into()
        }
    );
    assert!(p(&["logs", "--stream", "both", "C"]).is_err());
    assert!(p(&["logs"]).is_err());
}

#[test]
fn error_chain_skips_causes_already_quoted() {
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
    let e = anyhow::Error::new(io)
        .context("transport error: No such file")
        .context("connect /x");
    assert_eq!(error_chain(&e), "connect /x: transport error: No such file");
    let e = anyhow::anyhow!("inner").context("outer");
    assert_eq!(error_chain(&e), "outer: inner");
}
