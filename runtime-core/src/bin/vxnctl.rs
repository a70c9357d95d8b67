//! vxnctl: drive a vxn DomU by hand, without containerd. The lab's smoke
//! test and a debugging aid.
//!
//! vxnctl xen-run --name N --kernel K --initramfs I --rootfs-disk IMG
//!                [--memory MiB] [--vcpus N] [--timeout S] [--log LEVEL] -- ARGV...
//! vxnctl domain-name NAMESPACE ID   (the domain the shim gives that container)
//! vxnctl network up [--dhcp] [--no-nat] | down [--force] | status | leases
//!                   (dom0's side of [network] in /etc/vxn/config.toml)
//! vxnctl pool status | fill | drain | refill   (the warm pool: docs/warm-pool.md)
#![forbid(unsafe_code)]

#[path = "vxnctl/pool.rs"]
mod pool;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use vxn_runtime_core::hypervisor::{self, Hypervisor, VmSpec};
use vxn_runtime_core::xen::domain::XenHypervisor;
use vxn_runtime_core::xen::Xl;
use vxn_runtime_core::StdioRequest;
use vxn_wire::boot;
use vxn_wire::protocol::{CreateContainer, MountSpec, ProcessSpec, RootfsSource};

const USAGE: &str =
    "usage: vxnctl xen-run --name NAME --kernel PATH --initramfs PATH --rootfs-disk IMG \
[--memory MiB] [--vcpus N] [--timeout SECONDS] [--log LEVEL] [--channel vchan|console] -- ARGV...
       vxnctl domain-name NAMESPACE ID
       vxnctl network up [--dhcp] [--no-nat] | down [--force] | status | leases
       vxnctl pool status | fill | drain | refill";

struct RunArgs {
    name: String,
    kernel: PathBuf,
    initramfs: PathBuf,
    rootfs_disk: PathBuf,
    memory: u64,
    vcpus: u32,
    timeout: Duration,
    log: String,
    channel: boot::AgentChannel,
    argv: Vec<String>,
}

fn parse(args: &[String]) -> Result<RunArgs, String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("xen-run") {
        return Err(USAGE.into());
    }
    let (mut name, mut kernel, mut initramfs, mut disk) = (None, None, None, None);
    let (mut memory, mut vcpus, mut timeout, mut log) = (256, 1, 120, "info".to_string());
    let mut argv = Vec::new();
    let mut channel = boot::AgentChannel::Vchan;
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--name" => name = Some(val()?),
            "--kernel" => kernel = Some(PathBuf::from(val()?)),
            "--initramfs" => initramfs = Some(PathBuf::from(val()?)),
            "--rootfs-disk" => disk = Some(PathBuf::from(val()?)),
            "--memory" => memory = val()?.parse().map_err(|_| "--memory takes MiB")?,
            "--vcpus" => vcpus = val()?.parse().map_err(|_| "--vcpus takes a number")?,
            "--timeout" => timeout = val()?.parse().map_err(|_| "--timeout takes seconds")?,
            "--log" => log = val()?,
            "--channel" => channel = hypervisor::parse_agent_channel(&val()?)?,
            "--" => {
                argv = it.by_ref().cloned().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    fn need<T>(v: Option<T>, what: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("{what} is required\n{USAGE}"))
    }
    if argv.is_empty() {
        return Err(format!("no command given\n{USAGE}"));
    }
    Ok(RunArgs {
        name: need(name, "--name")?,
        kernel: need(kernel, "--kernel")?,
        initramfs: need(initramfs, "--initramfs")?,
        rootfs_disk: need(disk, "--rootfs-disk")?,
        memory,
        vcpus,
        timeout: Duration::from_secs(timeout),
        log,
        channel,
        argv,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("network") {
        return network(&args[1..]).await;
    }
    if args.first().map(String::as_str) == Some("pool") {
        init_logging("info");
        return pool::main(&args[1..]).await;
    }
    if let [verb, ns, id] = args.as_slice() {
        if verb == "domain-name" {
            return match vxn_runtime_core::names::ContainerName::new(ns, id) {
                Ok(n) => {
                    println!("{}", n.domain());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vxnctl: {e}");
                    ExitCode::from(2)
                }
            };
        }
    }
    let run = match parse(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&run.log);
    // Its disk is a file (a qdisk), so no hotplug script of vxn's is needed.
    let hv = XenHypervisor::new(Xl::default(), run.channel, None);
    let dir = PathBuf::from("/run/vxn/vxnctl").join(&run.name);
    let result = tokio::select! {
        r = xen_run(&hv, &dir, &run) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    // Whatever happened, leave no domain and no files behind.
    let t = Instant::now();
    if let Err(e) = hv.destroy(&run.name).await {
        eprintln!("vxnctl: destroy {}: {e}", run.name);
    }
    let destroy = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((code, mut timing)) => {
            timing.push(("destroy", destroy));
            let line: Vec<String> = timing
                .iter()
                .map(|(k, d)| format!("{k}={:.2}s", d.as_secs_f64()))
                .collect();
            eprintln!("vxnctl: timing {}", line.join(" "));
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("vxnctl: {e}");
            ExitCode::from(125)
        }
    }
}

type Timing = Vec<(&'static str, Duration)>;

async fn xen_run(
    hv: &XenHypervisor,
    dir: &std::path::Path,
    run: &RunArgs,
) -> Result<(i32, Timing), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let vm = VmSpec {
        name: run.name.clone(),
        kernel: run.kernel.clone(),
        initramfs: run.initramfs.clone(),
        cmdline_extra: String::new(),
        agent_log: run.log.clone(),
        memory_mib: run.memory,
        max_memory_mib: run.memory,
        vcpus: run.vcpus,
        max_vcpus: run.vcpus,
        rootfs_disk: Some(run.rootfs_disk.clone()),
        rootfs_writable: true,
        upper_disk: None,
        vif: None,
        shares: vec![],
        state_dir: dir.to_path_buf(),
    };
    let mut timing = Timing::new();

    let t = Instant::now();
    let stream = hv.create_paused(&vm).await.map_err(|e| e.to_string())?;
    timing.push(("create", t.elapsed()));

    let t = Instant::now();
    let connect = tokio::spawn(hypervisor::connect_agent(stream, run.timeout));
    hv.unpause(&run.name).await.map_err(|e| e.to_string())?;
    let client = connect.await.map_err(|e| e.to_string())??;
    timing.push(("agent-ready", t.elapsed()));

    let t = Instant::now();
    let (ids, mut io) = client
        .open_stdio(StdioRequest {
            stdin: false,
            stdout: true,
            stderr: true,
            terminal: false,
        })
        .map_err(|e| e.to_string())?;
    client
        .create_container(CreateContainer {
            container_id: run.name.clone(),
            hostname: Some(run.name.clone()),
            rootfs: RootfsSource::Block {
                device: boot::ROOTFS_DEVICE.into(),
                fstype: "ext4".into(),
                options: vec![],
            },
            readonly_rootfs: false,
            mounts: MountSpec::defaults(),
            process: ProcessSpec {
                args: run.argv.clone(),
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                cwd: "/".into(),
                ..Default::default()
            },
            stdio: ids,
            memory_limit_bytes: None,
            isolation: Default::default(),
        })
        .await
        .map_err(|e| format!("create: {e}"))?;
    client
        .start(&run.name, None)
        .await
        .map_err(|e| format!("start: {e}"))?;
    let copy = |r: Option<vxn_wire::mux::StreamReader>, stderr: bool| async move {
        let Some(mut r) = r else { return };
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if stderr {
            Box::new(tokio::io::stderr())
        } else {
            Box::new(tokio::io::stdout())
        };
        while let Ok(Some(chunk)) = r.recv().await {
            if out.write_all(&chunk).await.is_err() {
                break;
            }
            let _ = out.flush().await;
        }
    };
    let wait = async {
        tokio::join!(copy(io.stdout.take(), false), copy(io.stderr.take(), true));
        client.wait(&run.name, None).await
    };
    let status = tokio::time::timeout(run.timeout, wait)
        .await
        .map_err(|_| format!("the command did not finish within {:?}", run.timeout))?
        .map_err(|e| format!("wait: {e}"))?;
    timing.push(("run", t.elapsed()));
    let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    Ok((status.code, timing))
}

fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .init();
}

/// `vxnctl network ...`: dom0's bridge, NAT and dnsmasq, and the lease pool.
async fn network(args: &[String]) -> ExitCode {
    use vxn_runtime_core::network::{host, lease};
    let cfg = match vxn_runtime_core::config::Config::load() {
        Ok(c) => c.network,
        Err(e) => {
            eprintln!("vxnctl: {e}");
            return ExitCode::from(2);
        }
    };
    let flags: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let known = |ok: &[&str]| flags.iter().all(|f| ok.contains(f));
    let result = match args.first().map(String::as_str) {
        Some("up") if known(&["--dhcp", "--no-nat"]) => {
            let opts = host::UpOptions {
                dhcp: flags.contains(&"--dhcp"),
                no_nat: flags.contains(&"--no-nat"),
            };
            host::up(&cfg, &opts).await
        }
        Some("down") if known(&["--force"]) => host::down(&cfg, flags.contains(&"--force")).await,
        Some("status") if flags.is_empty() => Ok(host::status(&cfg).await),
        Some("leases") if flags.is_empty() => lease::list(&cfg.lease_dir).await.map(|v| {
            v.into_iter()
                .map(|(a, l)| match l {
                    Some(l) => format!(
                        "{a}\t{}\t{}/{}\t{}{}",
                        l.mac,
                        l.namespace,
                        l.id,
                        l.domain,
                        if l.dhcp.is_some() { "\tdhcp" } else { "" }
                    ),
                    None => format!("{a}\t(unreadable)"),
                })
                .collect()
        }),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vxnctl network: {e}");
            ExitCode::FAILURE
        }
    }
}
