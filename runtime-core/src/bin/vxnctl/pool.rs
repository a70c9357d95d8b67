//! `vxnctl pool status|fill|drain|refill`: the warm pool of the config's
//! kernel (docs/warm-pool.md). `refill` is what a claim starts: a `fill`
//! that a drain stops.

use std::process::ExitCode;

use vxn_runtime_core::config::Config;
use vxn_runtime_core::platform;
use vxn_runtime_core::pool::{self, PoolStore};

pub const USAGE: &str = "vxnctl pool status | fill | drain | refill";

pub async fn main(args: &[String]) -> ExitCode {
    let cfg = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vxnctl: {e}");
            return ExitCode::from(2);
        }
    };
    let store = cfg.pool_store();
    let verb = match args {
        [v] => v.as_str(),
        _ => {
            eprintln!("usage: {USAGE}");
            return ExitCode::from(2);
        }
    };
    if verb == "status" {
        status(&cfg, &store);
        return ExitCode::SUCCESS;
    }
    if !["fill", "drain", "refill"].contains(&verb) {
        eprintln!("usage: {USAGE}");
        return ExitCode::from(2);
    }
    let (hv, exporter) = match platform::build(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vxnctl pool: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pf = pool::Platform {
        hv: hv.as_ref(),
        exporter: exporter.as_ref(),
    };
    let result = if verb == "fill" || verb == "refill" {
        // refill: what a claim starts; it does nothing while the pool is drained
        let mut lines = vec![];
        let mut failed = None;
        for (what, plan) in ["containers", "pods"].into_iter().zip(cfg.pool_plans()) {
            if plan.target() == 0 {
                continue;
            }
            match pool::fill(&store, &pf, &plan, verb == "fill").await {
                Ok(f) => lines.push(match f.skipped {
                    Some(why) => format!("{what}: nothing done: {why}"),
                    None => format!(
                        "{what}: {} made, {} ready (of {}), {} half-made destroyed",
                        f.made,
                        f.ready,
                        plan.target(),
                        f.reaped
                    ),
                }),
                Err(e) => failed = Some(format!("{what}: {e}")),
            }
        }
        match failed {
            Some(e) => Err(e),
            None if lines.is_empty() => Ok("no pool configured ([pool] size, pod_size)".into()),
            None => Ok(lines.join("\n")),
        }
    } else {
        pool::drain(&store, &pf)
            .await
            .map(|n| format!("{n} destroyed; refills stopped until `vxnctl pool fill`"))
            .map_err(|e| e.to_string())
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vxnctl pool {verb}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(cfg: &Config, store: &PoolStore) {
    let plans = cfg.pool_plans();
    for (what, plan) in ["containers", "pods"].into_iter().zip(&plans) {
        println!(
            "pool of {what}: size {} (target {}), {}{}",
            plan.size,
            plan.target(),
            plan.shape.key(),
            if pool::drained(store) {
                ", drained"
            } else {
                ""
            }
        );
    }
    for (shape, ready, filling) in pool::fill::status(store) {
        let current = match plans.iter().position(|p| p.shape == shape) {
            Some(0) => " (the config's)",
            Some(_) => " (the config's, pods)",
            None => "",
        };
        println!(
            "{}{current}: {ready} ready, {filling} being made; {} boot {} MiB, max {} MiB {} vcpus{}",
            shape.key(),
            shape.kernel.display(),
            shape.boot_memory_mib,
            shape.max_memory_mib,
            shape.max_vcpus,
            if shape.share { ", a share" } else { "" }
        );
    }
}
