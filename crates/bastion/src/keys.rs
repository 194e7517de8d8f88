//! `bastion keys …`: the key ring, data-key rotation (rewrap, retire) and master-key rotation.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bastion_crypto::keyring::Purpose;
use bastion_crypto::master::MasterKey;
use bastion_server::Bastion;
use bastion_server::config::Config;
use bastion_server::master_key;

use crate::cli::KeysCommand;

fn purpose(name: &str) -> anyhow::Result<Purpose> {
    Purpose::parse(name).with_context(|| {
        let names: Vec<_> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown purpose {name:?}; one of: {}", names.join(", "))
    })
}

pub async fn run(cfg: &Config, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Status => status(cfg).await,
        KeysCommand::Rotate { purpose: p } => {
            let p = purpose(&p)?;
            let b = Bastion::open(cfg).await?;
            let k = b.rotate_key(p).await?;
            println!(
                "{} key rotated: version {} ({}, {}); running servers pick it up within a minute",
                k.purpose, k.version, k.key_id, k.algorithm
            );
            if p.seals_data() {
                println!(
                    "then re-seal older rows: bastion keys rewrap --purpose {}",
                    p.as_str()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rewrap {
            purpose: p,
            batch,
            pause_ms,
        } => rewrap(cfg, p.as_deref().map(purpose).transpose()?, batch, pause_ms).await,
        KeysCommand::Retire {
            purpose: p,
            below_version,
        } => {
            let p = purpose(&p)?;
            let b = Bastion::open(cfg).await?;
            let n = b.vault.retire(p, below_version).await?;
            println!(
                "{n} {} key version(s) below v{below_version} retired; nothing opens under them now",
                p.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::RotateMaster { new_key_file } => {
            let new = master_key::read_key_file(&new_key_file)?;
            let b = Bastion::open(cfg).await?;
            let n = b.rotate_master(&new).await?;
            println!(
                "{n} purpose keys re-wrapped under the new master key (fingerprint {})",
                new.fingerprint()?
            );
            match &b.master_key_source {
                master_key::MasterKeySource::Env => println!(
                    "set BASTION_MASTER_KEY to the new key before the next start, on every node; \
                     the old key no longer opens the key ring"
                ),
                source => println!(
                    "{source} now holds the new key; running servers keep their loaded keys until restarted"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::GenerateMaster { out } => {
            let key = MasterKey::generate()?;
            master_key::write_key_file(&out, &key)?;
            println!(
                "wrote a new master key to {} (mode 0600, fingerprint {})",
                out.display(),
                key.fingerprint()?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn rewrap(
    cfg: &Config,
    purpose: Option<Purpose>,
    batch: u32,
    pause_ms: u64,
) -> anyhow::Result<ExitCode> {
    let b = Bastion::open(cfg).await?;
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:<22} {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    let mut progress = |p: &bastion_core::vault::rotation::RewrapProgress| {
        let name = format!("{}.{}", p.column.table(), p.column.column());
        if bar.prefix() != name {
            bar.reset();
            bar.set_prefix(name);
        }
        bar.set_length(p.total.max(p.done));
        bar.set_position(p.done);
    };
    let reports = b
        .vault
        .rewrap(
            purpose,
            batch,
            Duration::from_millis(pause_ms),
            &mut progress,
        )
        .await?;
    bar.finish_and_clear();
    let mut failed = 0;
    for r in &reports {
        println!(
            "{:<22} {:>8} rewrapped under {}, {:>6} changed meanwhile (already current), {:>4} failed",
            format!("{}.{}", r.column.table(), r.column.column()),
            r.rewrapped,
            r.key_id,
            r.changed_meanwhile,
            r.failed.len()
        );
        for (row, reason) in &r.failed {
            println!("  row {row}: {reason}");
        }
        failed += r.failed.len();
    }
    if failed > 0 {
        println!("{failed} row(s) did not open and were left as they are");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(cfg: &Config) -> anyhow::Result<ExitCode> {
    let b = Bastion::open(cfg).await?;
    let ring = b.keys.current();
    println!(
        "master key: {} (fingerprint {})",
        b.master_key_source,
        ring.master_fingerprint()
    );
    println!(
        "backend:    {} ({:?})",
        b.store.backend(),
        b.store.isolation()
    );
    let status = b.vault.status().await?;
    println!(
        "{:<13} {:>7}  {:<28} {:<12} {:<8} {:>9} {:>12}  created",
        "purpose", "version", "key id", "algorithm", "state", "rows", "encryptions"
    );
    for k in ring.records() {
        // Whole seconds: the table has no room for fractions.
        let created =
            bastion_core::clock::rfc3339(k.created_ms.div_euclid(1000) * 1000).unwrap_or_default();
        let state = if k.retired { "retired" } else { "active" };
        // Envelopes name a data key `<purpose>-v<N>`.
        let sealed_id = format!("{}-v{}", k.purpose, k.version);
        let rows: u64 = status
            .rows
            .iter()
            .filter(|c| c.key_id == sealed_id)
            .map(|c| c.rows)
            .sum();
        let used = status
            .encryptions
            .iter()
            .find(|(id, _)| *id == sealed_id)
            .map_or(0, |(_, n)| *n);
        let (rows, used) = if k.algorithm == "AES-256-GCM" {
            (rows.to_string(), used.to_string())
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<13} {:>7}  {:<28} {:<12} {:<8} {rows:>9} {used:>12}  {created}",
            k.purpose, k.version, k.key_id, k.algorithm, state
        );
    }
    let unknown: u64 = status
        .rows
        .iter()
        .filter(|c| c.key_id.is_empty())
        .map(|c| c.rows)
        .sum();
    if unknown > 0 {
        println!("{unknown} row(s) sealed before key ids were recorded: rewrap tags them");
    }
    Ok(ExitCode::SUCCESS)
}
