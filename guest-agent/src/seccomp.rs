//! An OCI seccomp profile compiled to a classic BPF filter, loaded by each
//! process of the container just before it execs.
//!
//! The filter: a syscall of another architecture (a 32-bit or x32 call on
//! x86_64) kills the process; then one block per (rule, syscall) in order of
//! the action's precedence (kill before trap before errno before trace
//! before log before allow, as libseccomp ranks them), each comparing the
//! syscall number and the rule's argument conditions (ANDed, 64-bit); the
//! first block that matches returns its action, and the profile's default
//! action ends the program. Names this architecture lacks are skipped, as
//! runc does.

use std::str::FromStr;

use vxn_wire::protocol::{AgentError, ErrorKind, Seccomp, SeccompArg, SeccompRule};

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
/// x32 calls carry this bit on x86_64: another ABI, refused like another arch.
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

// struct seccomp_data: nr at 0, arch at 4, args at 16 + 8 * i (little endian).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// The kernel's limit on one filter.
const MAX_INSNS: usize = 4096;

fn invalid(msg: String) -> AgentError {
    AgentError::new(
        ErrorKind::InvalidArgument,
        format!("seccomp profile: {msg}"),
    )
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// An OCI action as a seccomp return value, and its precedence (lower first).
fn action(name: &str, errno: Option<u32>, default_errno: u32) -> Result<(u32, u8), AgentError> {
    let errno = errno.unwrap_or(default_errno) & 0xffff;
    Ok(match name {
        "SCMP_ACT_KILL_PROCESS" => (RET_KILL_PROCESS, 0),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => (RET_KILL_THREAD, 1),
        "SCMP_ACT_TRAP" => (RET_TRAP, 2),
        "SCMP_ACT_ERRNO" => (RET_ERRNO | errno, 3),
        "SCMP_ACT_TRACE" => (RET_TRACE | errno, 4),
        "SCMP_ACT_LOG" => (RET_LOG, 5),
        "SCMP_ACT_ALLOW" => (RET_ALLOW, 6),
        other => return Err(invalid(format!("action {other} is not supported"))),
    })
}

/// The instructions that fall through when `arg` holds and jump `fail`
/// forward (past the rest of the block) when not; `fail` counts from the
/// end of these instructions.
fn arg_check(a: &SeccompArg, fail: usize) -> Result<Vec<libc::sock_filter>, AgentError> {
    if a.index > 5 {
        return Err(invalid(format!("argument index {}", a.index)));
    }
    let (v_hi, v_lo) = ((a.value >> 32) as u32, a.value as u32);
    let (lo, hi) = (off_arg_lo(a.index), off_arg_hi(a.index));
    // Jumps are counted from each instruction to the end of this check
    // (`to_end`), plus `fail` for a failure.
    let mut v: Vec<(u16, u32, Target, Target)> = Vec::new();
    use Target::{Fail, Next, Pass};
    match a.op.as_str() {
        "SCMP_CMP_EQ" => {
            v.push((BPF_LD_W_ABS, hi, Next, Next));
            v.push((BPF_JEQ_K, v_hi, Next, Fail));
            v.push((BPF_LD_W_ABS, lo, Next, Next));
            v.push((BPF_JEQ_K, v_lo, Pass, Fail));
        }
        "SCMP_CMP_NE" => {
            v.push((BPF_LD_W_ABS, hi, Next, Next));
            v.push((BPF_JEQ_K, v_hi, Next, Pass));
            v.push((BPF_LD_W_ABS, lo, Next, Next));
            v.push((BPF_JEQ_K, v_lo, Fail, Pass));
        }
        "SCMP_CMP_MASKED_EQ" => {
            // value is the mask, valueTwo what the masked argument must equal.
            let (m_hi, m_lo) = ((a.value >> 32) as u32, a.value as u32);
            let (w_hi, w_lo) = ((a.value_two >> 32) as u32, a.value_two as u32);
            v.push((BPF_LD_W_ABS, hi, Next, Next));
            v.push((BPF_AND_K, m_hi, Next, Next));
            v.push((BPF_JEQ_K, w_hi, Next, Fail));
            v.push((BPF_LD_W_ABS, lo, Next, Next));
            v.push((BPF_AND_K, m_lo, Next, Next));
            v.push((BPF_JEQ_K, w_lo, Pass, Fail));
        }
        op @ ("SCMP_CMP_GT" | "SCMP_CMP_GE" | "SCMP_CMP_LT" | "SCMP_CMP_LE") => {
            // hi > v_hi decides, hi == v_hi leaves it to the low words.
            let greater = matches!(op, "SCMP_CMP_GT" | "SCMP_CMP_GE");
            let (above, below) = if greater { (Pass, Fail) } else { (Fail, Pass) };
            v.push((BPF_LD_W_ABS, hi, Next, Next));
            v.push((BPF_JGT_K, v_hi, above, Next));
            v.push((BPF_JEQ_K, v_hi, Next, below));
            v.push((BPF_LD_W_ABS, lo, Next, Next));
            match op {
                "SCMP_CMP_GT" => v.push((BPF_JGT_K, v_lo, Pass, Fail)),
                "SCMP_CMP_GE" => v.push((BPF_JGE_K, v_lo, Pass, Fail)),
                // lo < v <=> !(lo >= v); lo <= v <=> !(lo > v)
                "SCMP_CMP_LT" => v.push((BPF_JGE_K, v_lo, Fail, Pass)),
                _ => v.push((BPF_JGT_K, v_lo, Fail, Pass)),
            }
        }
        other => return Err(invalid(format!("comparison {other} is not supported"))),
    }
    let n = v.len();
    let offset = |i: usize, t: Target| -> Result<u8, AgentError> {
        let to_end = n - i - 1;
        let off = match t {
            Next => 0,
            Pass => to_end,
            Fail => to_end + fail,
        };
        u8::try_from(off).map_err(|_| invalid("a rule is too long to jump over".into()))
    };
    v.into_iter()
        .enumerate()
        .map(|(i, (code, k, t, f))| {
            Ok(if code == BPF_LD_W_ABS || code == BPF_AND_K {
                stmt(code, k)
            } else {
                jump(code, k, offset(i, t)?, offset(i, f)?)
            })
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Target {
    Next,
    Pass,
    Fail,
}

/// The number of `name` on this architecture, if it has that syscall.
fn syscall_number(name: &str) -> Option<u32> {
    syscalls::Sysno::from_str(name).ok().map(|s| s.id() as u32)
}

/// One rule's block for one syscall: number check, argument checks, return.
fn rule_block(nr: u32, rule: &SeccompRule, ret: u32) -> Result<Vec<libc::sock_filter>, AgentError> {
    // Built back to front: each check jumps past what follows it on failure.
    let mut tail = vec![stmt(BPF_RET_K, ret)];
    for a in rule.args.iter().rev() {
        let mut check = arg_check(a, tail.len())?;
        check.extend(tail);
        tail = check;
    }
    let skip = u8::try_from(tail.len()).map_err(|_| invalid("a rule is too long".into()))?;
    let mut block = vec![jump(BPF_JEQ_K, nr, 0, skip)];
    block.extend(tail);
    // The argument checks loaded the arguments: the next block needs nr again.
    if !rule.args.is_empty() {
        block.push(stmt(BPF_LD_W_ABS, OFF_NR));
    }
    Ok(block)
}

/// Compile `profile` for this architecture.
pub fn compile(profile: &Seccomp) -> Result<Vec<libc::sock_filter>, AgentError> {
    let default_errno = profile.default_errno_ret.unwrap_or(libc::EPERM as u32);
    let (default_ret, _) = action(&profile.default_action, None, default_errno)?;
    let mut rules: Vec<(u8, u32, &SeccompRule)> = profile
        .syscalls
        .iter()
        .map(|r| {
            let (ret, rank) = action(&r.action, r.errno_ret, default_errno)?;
            Ok((rank, ret, r))
        })
        .collect::<Result<_, AgentError>>()?;
    // Stable: rules of one precedence keep the profile's order.
    rules.sort_by_key(|(rank, _, _)| *rank);
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        prog.push(jump(BPF_JGE_K, X32_BIT, 0, 1));
        prog.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    }
    for (_, ret, rule) in rules {
        // The default action needs no rule of its own.
        if ret == default_ret && rule.args.is_empty() {
            continue;
        }
        for name in &rule.names {
            let Some(nr) = syscall_number(name) else {
                tracing::debug!(syscall = %name, "seccomp: not a syscall of this architecture, skipped");
                continue;
            };
            prog.extend(rule_block(nr, rule, ret)?);
        }
    }
    prog.push(stmt(BPF_RET_K, default_ret));
    if prog.len() > MAX_INSNS {
        return Err(invalid(format!(
            "{} instructions, more than the kernel's {MAX_INSNS}",
            prog.len()
        )));
    }
    Ok(prog)
}

/// Load `prog` into the calling thread (async-signal-safe: for the forked
/// child). Needs no_new_privs or CAP_SYS_ADMIN.
///
/// # Safety
/// Only a system call on memory the caller keeps alive.
pub unsafe fn load(prog: &[libc::sock_filter]) -> libc::c_int {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    libc::prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        &fprog as *const libc::sock_fprog,
        0,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        names: &[&str],
        action: &str,
        errno: Option<u32>,
        args: Vec<SeccompArg>,
    ) -> SeccompRule {
        SeccompRule {
            names: names.iter().map(|s| s.to_string()).collect(),
            action: action.into(),
            errno_ret: errno,
            args,
        }
    }

    fn arg(index: u32, op: &str, value: u64, value_two: u64) -> SeccompArg {
        SeccompArg {
            index,
            value,
            value_two,
            op: op.into(),
        }
    }

    /// Run `f` in a forked child under `profile`; its exit code, or 128+signal.
    fn under(profile: &Seccomp, f: fn() -> i32) -> i32 {
        let prog = compile(profile).unwrap();
        // SAFETY: the child only makes system calls and exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if load(&prog) != 0 {
                    libc::_exit(100);
                }
                libc::_exit(f());
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            }
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn errno_rules_deny_and_the_default_allows() {
        let p = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![
                rule(
                    &["getppid"],
                    "SCMP_ACT_ERRNO",
                    Some(libc::EACCES as u32),
                    vec![],
                ),
                rule(&["not_a_syscall"], "SCMP_ACT_ERRNO", None, vec![]),
            ],
            ..Default::default()
        };
        // SAFETY: plain system calls.
        let code = under(&p, || unsafe {
            if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EACCES {
                return 1;
            }
            if libc::syscall(libc::SYS_getpid) <= 0 {
                return 2;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn arguments_decide_and_the_default_denies() {
        // Allow-list: only what the child needs, dup only onto fd 7..=9,
        // umask only with 0o022 in its mask.
        let p = Seccomp {
            default_action: "SCMP_ACT_ERRNO".into(),
            default_errno_ret: Some(libc::ENOSYS as u32),
            syscalls: vec![
                rule(&["exit", "exit_group"], "SCMP_ACT_ALLOW", None, vec![]),
                rule(
                    &["dup2", "dup3"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![arg(1, "SCMP_CMP_GE", 7, 0), arg(1, "SCMP_CMP_LE", 9, 0)],
                ),
                rule(
                    &["umask"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![arg(0, "SCMP_CMP_MASKED_EQ", 0o022, 0o022)],
                ),
                rule(
                    &["getpid"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![arg(0, "SCMP_CMP_NE", 1 << 40, 0)],
                ),
            ],
            ..Default::default()
        };
        // SAFETY: plain system calls on fds the child owns.
        let code = under(&p, || unsafe {
            let dup = |to: libc::c_long| {
                libc::syscall(libc::SYS_dup3, 1 as libc::c_long, to, 0 as libc::c_long) == to
            };
            if !dup(8) || !dup(7) || !dup(9) {
                return 1;
            }
            if dup(6) || errno() != libc::ENOSYS || dup(10) {
                return 2;
            }
            if libc::syscall(libc::SYS_umask, 0o027) < 0
                || libc::syscall(libc::SYS_umask, 0o007) >= 0
            {
                return 3;
            }
            // A denied call by default: getppid.
            if libc::syscall(libc::SYS_getppid) >= 0 || errno() != libc::ENOSYS {
                return 4;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn kill_wins_over_allow_and_bad_profiles_are_refused() {
        let p = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![
                rule(&["getppid"], "SCMP_ACT_ALLOW", None, vec![]),
                rule(&["getppid"], "SCMP_ACT_KILL_PROCESS", None, vec![]),
            ],
            ..Default::default()
        };
        // SAFETY: a plain system call.
        let code = under(&p, || unsafe {
            libc::syscall(libc::SYS_getppid);
            0
        });
        assert_eq!(code, 128 + libc::SIGSYS);
        let bad = Seccomp {
            default_action: "SCMP_ACT_NOTIFY".into(),
            ..Default::default()
        };
        assert!(compile(&bad).is_err());
        let bad_arg = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![rule(
                &["read"],
                "SCMP_ACT_ERRNO",
                None,
                vec![arg(6, "SCMP_CMP_EQ", 0, 0)],
            )],
            ..Default::default()
        };
        assert!(compile(&bad_arg).is_err());
    }
}
