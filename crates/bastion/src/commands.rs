//! What each command does, in terms of `bastion-server` and `bastion-core`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use bastion_core::audit::{self, CheckpointFile};
use bastion_server::config::{Config, DEFAULT_TOML};
use bastion_server::{Bastion, telemetry};

use crate::cli::{
    AdminCommand, AuditCommand, Cli, Command, ConfigCommand, LicenseCommand, TlsCommand,
};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that need no configuration.
    match &cli.command {
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{DEFAULT_TOML}");
            return Ok(ExitCode::SUCCESS);
        }
        Command::Healthcheck(args) => return Ok(crate::healthcheck::run(args).await),
        Command::License(LicenseCommand::Verify {
            public_key,
            email,
            key,
        }) => return crate::license::verify_offline(public_key, email.as_deref(), key),
        Command::Tls(TlsCommand::SelfSigned { out, names }) => {
            bastion_server::tls::write_self_signed(out, names.clone())?;
            println!(
                "wrote {0}/cert.pem and {0}/key.pem (development only)",
                out.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let cfg = Config::load(cli.global.config.as_deref(), None, &cli.overrides())?;
    telemetry::init(&cfg.log);
    match cli.command {
        Command::Serve(_) => {
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("binding {}", cfg.listen))?;
            bastion_server::run_with_listener(
                cfg,
                listener,
                bastion_server::startup::shutdown_signal(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = bastion_server::storage::open(&cfg).await?;
            println!("migrations applied ({})", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(cmd) => crate::keys::run(&cfg, cmd).await,
        Command::License(cmd) => crate::license::run(&cfg, cmd).await,
        Command::Audit(cmd) => audit_command(&cfg, cmd).await,
        Command::Cleanup { dry_run } => {
            let b = Bastion::open(&cfg).await?;
            let services = bastion_server::startup::auth_services(&b, &cfg)?;
            let (verb, rows) = if dry_run {
                ("would remove", services.cleanup.preview().await?)
            } else {
                ("removed", services.cleanup.run().await?)
            };
            for (kind, n) in rows {
                println!("{verb} {n:>8}  {kind}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCommand::CreateUser { email, super_admin }) => {
            let b = Bastion::open(&cfg).await?;
            let services = bastion_server::startup::auth_services(&b, &cfg)?;
            let (account, link) = services
                .accounts
                .create_by_admin(&email, super_admin)
                .await?;
            let minutes = services.accounts.link_ttl_ms() / 60_000;
            println!(
                "created {} <{}>{}",
                account.id,
                account.email,
                if super_admin { " (super admin)" } else { "" }
            );
            println!(
                "give this one-time link to its owner to set the password (expires in {minutes} minutes):"
            );
            println!("{}", secrecy::ExposeSecret::expose_secret(&link));
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(_) | Command::Healthcheck(_) | Command::Tls(_) => Ok(ExitCode::SUCCESS),
    }
}

async fn audit_command(cfg: &Config, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let b = Bastion::open(cfg).await?;
    match cmd {
        AuditCommand::Verify { checkpoint, json } => {
            let mut extra = Vec::new();
            for path in &checkpoint {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let file: CheckpointFile = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                extra.push(file.to_record()?);
            }
            let total = b
                .store
                .head(&bastion_store::Scope::System("audit.verify"))
                .await?
                .seq;
            let bar = progress_bar(total, json);
            let mut progress = |done: i64| bar.set_position(u64::try_from(done).unwrap_or(0));
            let report = audit::verify(
                b.store.as_ref(),
                &b.keys.current().audit_public_keys(),
                &extra,
                &mut progress,
            )
            .await?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.ok() {
                println!(
                    "audit log OK: {} events, {} checkpoints verified, head {}",
                    report.events, report.checkpoints_checked, report.head_hash
                );
            } else {
                println!(
                    "audit log FAILED verification after {} good events:",
                    report.events
                );
                for f in &report.findings {
                    println!("  - {f}");
                }
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Export { format: _, out } => {
            let mut sink: Box<dyn Write + Send> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let mut write = |e: &audit::ExportedEvent| -> std::io::Result<()> {
                serde_json::to_writer(&mut sink, e)?;
                sink.write_all(b"\n")
            };
            let n = audit::export(b.store.as_ref(), &mut write).await?;
            sink.flush()?;
            if out.is_some() {
                eprintln!("exported {n} events");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { out } => {
            let Some(file) = b.audit.export_checkpoint().await? else {
                anyhow::bail!("the audit log is empty: nothing to checkpoint");
            };
            std::fs::write(&out, serde_json::to_vec_pretty(&file)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "checkpoint of {} events written to {}",
                file.size,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn progress_bar(total: i64, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}
