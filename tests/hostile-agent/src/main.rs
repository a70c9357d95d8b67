//! vxn-hostile-agent: a guest agent that speaks the vxn protocol and then
//! misbehaves, for the shim's hardening tests (tests/e2e/hostile-e2e.sh runs
//! it through containerd with the process backend). The misbehaviour is
//! chosen by the container id it is asked to create:
//!
//! | id contains   | behaviour                                                       |
//! | ------------- | --------------------------------------------------------------- |
//! | `never-exit`  | acks every signal, never reports an exit                        |
//! | `silent-start`| never answers Start                                             |
//! | `no-read`     | after Start grants 4 GiB of stdin credit, then never reads again |
//! | `oom-flood`   | after Start sends OOM events as fast as it can                  |
//! | `big-answer`  | answers Stats, and the first ListPids, with a 4 MiB message    |
//! | `many-pids`   | has 100000 processes (answered in pages)                        |
//! | `fat-pids`    | endless pages of processes with 1000-byte command lines         |
//! | `forge`       | fails Exec with a message that forges log lines, 100 KiB long   |
//!
//! Anything else behaves: a process that exits 128+signal when signalled.
//! Same command line as vxn-agent's test mode (`--channel fd:N`, the rest ignored).

use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio_util::codec::FramedRead;
use vxn_wire::mux::handshake_agent;
use vxn_wire::protocol::frame::{encode_frame, HEADER_LEN};
use vxn_wire::protocol::{
    AgentError, Decoded, ErrorKind, Event, ExitStatus, Frame, FrameCodec, FrameKind, ProcessInfo,
    Request, Response, ResponseBody, Stats,
};

const TOTAL_PIDS: u32 = 100_000;
const PAGE: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Behave,
    NeverExit,
    SilentStart,
    NoRead,
    OomFlood,
    BigAnswer,
    ManyPids,
    FatPids,
    Forge,
}

impl Mode {
    fn of(id: &str) -> Self {
        [
            ("never-exit", Self::NeverExit),
            ("silent-start", Self::SilentStart),
            ("no-read", Self::NoRead),
            ("oom-flood", Self::OomFlood),
            ("big-answer", Self::BigAnswer),
            ("many-pids", Self::ManyPids),
            ("fat-pids", Self::FatPids),
            ("forge", Self::Forge),
        ]
        .into_iter()
        .find(|(k, _)| id.contains(k))
        .map(|(_, m)| m)
        .unwrap_or(Self::Behave)
    }
}

type Writer = Arc<AsyncMutex<Box<dyn AsyncWrite + Unpin + Send>>>;

async fn write(w: &Writer, f: Frame) {
    let mut b = BytesMut::new();
    if encode_frame(&f, &mut b).is_ok() {
        let _ = w.lock().await.write_all(&b).await;
    }
}

/// Raw bytes, bypassing the encoder's limits (an oversized frame).
async fn write_raw(w: &Writer, kind: FrameKind, id: u32, payload: &[u8]) {
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.push(kind as u8);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(payload);
    let _ = w.lock().await.write_all(&b).await;
}

async fn respond(w: &Writer, id: u32, body: ResponseBody) {
    write(
        w,
        Frame::new(
            FrameKind::Response,
            id,
            serde_json::to_vec(&body).unwrap_or_default(),
        ),
    )
    .await;
}

struct Guest {
    mode: Mutex<Mode>,
    /// The "process" exit, once signalled.
    exit: watch::Sender<Option<ExitStatus>>,
    stdin: Mutex<Option<u32>>,
    stop_reading: watch::Sender<bool>,
    big_answers: std::sync::atomic::AtomicU32,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Guest {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(self: Arc<Self>, w: Writer, id: u32, req: Request) {
        let mode = self.mode();
        let body: ResponseBody = match req {
            Request::CreateContainer(c) => {
                let m = Mode::of(&c.container_id);
                eprintln!("vxn-hostile-agent: container {} -> {m:?}", c.container_id);
                *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = m;
                *self.stdin.lock().unwrap_or_else(|p| p.into_inner()) = c.stdio.stdin;
                Ok(Response::Ok)
            }
            Request::Start { .. } if mode == Mode::SilentStart => return,
            Request::Start { .. } => {
                self.after_start(&w, mode).await;
                Ok(Response::Started { pid: 4242 })
            }
            Request::Wait { .. } if mode == Mode::NeverExit => return,
            Request::Wait { .. } => {
                let mut rx = self.exit.subscribe();
                let st = rx.wait_for(|e| e.is_some()).await.ok().and_then(|e| *e);
                match st {
                    Some(st) => Ok(Response::Exited(st)),
                    None => return,
                }
            }
            Request::Signal { signal, .. } => {
                if mode != Mode::NeverExit {
                    self.exit.send_replace(Some(ExitStatus {
                        code: 128 + signal,
                        signal: Some(signal),
                        exited_at_ns: now_ns(),
                    }));
                }
                Ok(Response::Ok)
            }
            Request::Exec { .. } if mode == Mode::Forge => Err(AgentError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "forged\ntime=\"2026-01-01T00:00:00Z\" level=error msg=\"FORGED-LOG-LINE\"\r\x1b[2J{}",
                    "A".repeat(100_000)
                ),
            )),
            Request::Stats { .. } | Request::ListPids { .. }
                if mode == Mode::BigAnswer
                    && (matches!(req, Request::Stats { .. })
                        || self.big_answers.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0) =>
            {
                let huge = vec![b' '; 4 << 20];
                write_raw(&w, FrameKind::Response, id, &huge).await;
                return;
            }
            Request::Stats { .. } => Ok(Response::Stats(Stats {
                cpu_usage_ns: 1,
                memory_usage_bytes: 1 << 20,
                memory_limit_bytes: 256 << 20,
                pids: 1,
                ..Default::default()
            })),
            Request::ListPids { after, .. } if mode == Mode::FatPids => {
                // ~1 MiB a page, and always more: only the host's byte bound ends it.
                let first = after.map(|a| a + 1).unwrap_or(1);
                let processes: Vec<ProcessInfo> = (first..first + 900)
                    .map(|pid| ProcessInfo {
                        pid,
                        exec_id: Some("e".repeat(100)),
                        command: "c".repeat(1000),
                    })
                    .collect();
                Ok(Response::Pids {
                    processes,
                    more: true,
                })
            }
            Request::ListPids { after, .. } => {
                let total = if mode == Mode::ManyPids { TOTAL_PIDS } else { 1 };
                let first = after.map(|a| a + 1).unwrap_or(1);
                let processes: Vec<ProcessInfo> = (first..=total)
                    .take(PAGE)
                    .map(|pid| ProcessInfo {
                        pid,
                        exec_id: None,
                        command: "hostile".into(),
                    })
                    .collect();
                let more = processes.last().is_some_and(|p| p.pid < total);
                Ok(Response::Pids { processes, more })
            }
            Request::Ping => Err(AgentError::new(ErrorKind::Unsupported, "no")),
            _ => Ok(Response::Ok),
        };
        respond(&w, id, body).await;
    }

    async fn after_start(&self, w: &Writer, mode: Mode) {
        match mode {
            Mode::NoRead => {
                let stdin = *self.stdin.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = stdin {
                    write(w, Frame::credit(s, u32::MAX)).await;
                }
                self.stop_reading.send_replace(true);
            }
            Mode::OomFlood => {
                let w = w.clone();
                tokio::spawn(async move {
                    let ev = serde_json::to_vec(&Event::Oom {
                        container_id: String::new(),
                    })
                    .unwrap_or_default();
                    loop {
                        for _ in 0..1000 {
                            write(&w, Frame::new(FrameKind::Event, 0, Bytes::from(ev.clone())))
                                .await;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            }
            _ => {}
        }
    }
}

fn channel_fd(args: &[String]) -> i32 {
    args.windows(2)
        .find(|w| w[0] == "--channel")
        .and_then(|w| w[1].strip_prefix("fd:")?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // SAFETY: the fd is the channel whoever started us handed over.
    let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(channel_fd(&args)) };
    let _ = std_stream.set_nonblocking(true);
    let Ok(mut io) = tokio::net::UnixStream::from_std(std_stream) else {
        eprintln!("vxn-hostile-agent: the channel is not a socket");
        std::process::exit(1);
    };
    let leftover = match handshake_agent(&mut io, "vxn-hostile-agent").await {
        Ok((_, l)) => l,
        Err(e) => {
            eprintln!("vxn-hostile-agent: handshake: {e}");
            std::process::exit(1);
        }
    };
    let (rd, wr) = io.into_split();
    let w: Writer = Arc::new(AsyncMutex::new(Box::new(wr)));
    let guest = Arc::new(Guest {
        mode: Mutex::new(Mode::Behave),
        exit: watch::channel(None).0,
        stdin: Mutex::new(None),
        stop_reading: watch::channel(false).0,
        big_answers: Default::default(),
    });
    let mut framed = FramedRead::new(rd, FrameCodec::default());
    framed.read_buffer_mut().extend_from_slice(&leftover);
    let mut stop = guest.stop_reading.subscribe();
    loop {
        tokio::select! {
            f = framed.next() => match f {
                Some(Ok(Decoded::Frame(f))) if f.kind == FrameKind::Request => {
                    match serde_json::from_slice::<Request>(&f.payload) {
                        Ok(req) => { tokio::spawn(guest.clone().handle(w.clone(), f.id, req)); }
                        Err(e) => respond(&w, f.id, Err(AgentError::new(ErrorKind::InvalidArgument, e.to_string()))).await,
                    }
                }
                // Stdin data and credits: taken and forgotten, no credit returned.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
            _ = stop.wait_for(|s| *s) => {
                eprintln!("vxn-hostile-agent: no longer reading the channel");
                // Keep the channel open, read nothing, until killed.
                std::future::pending::<()>().await;
            }
        }
    }
}
